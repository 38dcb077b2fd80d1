/*
 * Starts task processes with posix_spawn, which glibc implements with
 * clone(CLONE_VM | CLONE_VFORK): the child shares the parent's memory until
 * it execs, so a start costs the same whatever the size of the process that
 * starts it, where fork (Node's child_process.spawn) copies its page tables.
 *
 * spawn(file, argv, env, cwd, stdin, stdout, stderr, onExit)
 *   file    program; without a slash it is looked up in the PATH of `env`
 *   argv    its argv, argv[0] included
 *   env     "NAME=value" strings: its whole environment
 *   cwd     its working directory, or null for this process's own
 *   stdin   a file descriptor for its stdin, -1 for /dev/null, -2 for a new pipe
 *   stdout, stderr  file descriptors for its stdout and stderr
 *   onExit  called once with (exitCode, signalNumber) when it has exited
 *           (and been reaped); one of them is null
 * returns [pid, stdinWriteFd or -1, start time (field 22 of /proc/PID/stat)]
 * and throws an Error with `code` ("ENOENT", "EACCES", "ETXTBSY", ...) when
 * it could not start.
 *
 * The process is the leader of a new session and process group (setsid), with
 * every signal at its default action and none blocked. Its exit is learnt from
 * a pidfd watched by libuv (uv_poll), so nothing blocks the event loop and no
 * SIGCHLD handler is involved; libuv itself only reaps the processes it
 * spawned.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#define CHECK(call)                                                                                                    \
  do {                                                                                                                 \
    if ((call) != napi_ok) return NULL;                                                                                \
  } while (0)

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref on_exit;
  pid_t pid;
  int pidfd;
} child_t;

static napi_async_context async_context;
static napi_ref async_resource;

static int pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

static void free_strings(char **strings, uint32_t count) {
  if (!strings) return;
  for (uint32_t i = 0; i < count; i++) free(strings[i]);
  free(strings);
}

static char *get_string(napi_env env, napi_value value) {
  size_t length;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok) return NULL;
  char *text = malloc(length + 1);
  if (!text) return NULL;
  napi_get_value_string_utf8(env, value, text, length + 1, &length);
  return text;
}

/* A NULL-terminated copy of an array of strings; *count is set to its length. */
static char **get_strings(napi_env env, napi_value array, uint32_t *count) {
  if (napi_get_array_length(env, array, count) != napi_ok) return NULL;
  char **strings = calloc(*count + 1, sizeof(char *));
  if (!strings) return NULL;
  for (uint32_t i = 0; i < *count; i++) {
    napi_value item;
    napi_get_element(env, array, i, &item);
    strings[i] = get_string(env, item);
    if (!strings[i]) {
      free_strings(strings, i);
      return NULL;
    }
  }
  return strings;
}

static void throw_errno(napi_env env, int error, const char *file) {
  const char *code = strerrorname_np(error);
  char message[512];
  snprintf(message, sizeof message, "spawn %s %s (%s)", file, code ? code : "?", strerror(error));
  napi_throw_error(env, code ? code : "EUNKNOWN", message);
}

/* Field 22 of /proc/PID/stat: the start time in clock ticks since boot, as text. */
static void start_time(pid_t pid, char *out, size_t size) {
  char path[64], stat[1024];
  out[0] = '\0';
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t n = read(fd, stat, sizeof stat - 1);
  close(fd);
  if (n <= 0) return;
  stat[n] = '\0';
  char *p = strrchr(stat, ')'); /* the command name may hold spaces and parentheses */
  if (!p) return;
  p += 2;                                 /* field 3, the state */
  for (int field = 3; field < 22 && p; field++) {
    p = strchr(p, ' ');
    if (p) p++;
  }
  if (!p) return;
  size_t length = strcspn(p, " ");
  if (length >= size) return;
  memcpy(out, p, length);
  out[length] = '\0';
}

/* The PATH of the process's own environment, as execvp would take it. */
static const char *path_of(char **env) {
  for (char **entry = env; *entry; entry++)
    if (strncmp(*entry, "PATH=", 5) == 0) return *entry + 5;
  return "/usr/bin:/bin";
}

static int spawn_file(pid_t *pid, const char *file, const posix_spawn_file_actions_t *actions,
                      const posix_spawnattr_t *attr, char **argv, char **env) {
  int error = posix_spawn(pid, file, actions, attr, argv, env);
  if (error != ENOEXEC) return error;
  /* A script without "#!": run it with the shell, as execvp does. */
  uint32_t count = 0;
  while (argv[count]) count++;
  char **shell_argv = calloc(count + 2, sizeof(char *));
  if (!shell_argv) return ENOMEM;
  shell_argv[0] = "/bin/sh";
  shell_argv[1] = (char *)file;
  for (uint32_t i = 1; i < count; i++) shell_argv[i + 1] = argv[i];
  error = posix_spawn(pid, "/bin/sh", actions, attr, shell_argv, env);
  free(shell_argv);
  return error;
}

/* posix_spawn, looking `file` up in the PATH of `env` (not this process's) when it has no slash. */
static int spawn_searching(pid_t *pid, const char *file, const posix_spawn_file_actions_t *actions,
                           const posix_spawnattr_t *attr, char **argv, char **env) {
  if (strchr(file, '/')) return spawn_file(pid, file, actions, attr, argv, env);
  if (file[0] == '\0') return ENOENT;
  const char *path = path_of(env);
  int seen = ENOENT;
  size_t file_length = strlen(file);
  char candidate[4096];
  for (const char *dir = path;; dir++) {
    const char *end = strchrnul(dir, ':');
    size_t dir_length = (size_t)(end - dir);
    if (dir_length + file_length + 2 <= sizeof candidate) {
      if (dir_length == 0) {
        memcpy(candidate, file, file_length + 1); /* an empty entry is the working directory */
      } else {
        memcpy(candidate, dir, dir_length);
        candidate[dir_length] = '/';
        memcpy(candidate + dir_length + 1, file, file_length + 1);
      }
      struct stat info;
      if (stat(candidate, &info) == 0 && S_ISREG(info.st_mode)) {
        int error = spawn_file(pid, candidate, actions, attr, argv, env);
        if (error == 0) return 0;
        if (error == EACCES) seen = EACCES;
        else if (error != ENOENT && error != ENOTDIR) return error;
      } else if (errno == EACCES) {
        seen = EACCES;
      }
    }
    if (*end == '\0') break;
    dir = end;
  }
  return seen;
}

static void on_closed(uv_handle_t *handle) {
  child_t *child = (child_t *)handle;
  close(child->pidfd);
  free(child);
}

static void on_readable(uv_poll_t *poll, int status, int events) {
  (void)status;
  (void)events;
  child_t *child = (child_t *)poll;
  /* Whatever it left running in its group dies with it; while it is a zombie its pid, and so the
     group's id, cannot be taken by another process. */
  kill(-child->pid, SIGKILL);
  int wstatus;
  pid_t done = waitpid(child->pid, &wstatus, WNOHANG);
  if (done == 0) return; /* not yet: the pidfd stays readable until it is */
  uv_poll_stop(poll);
  napi_env env = child->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value code, sig, callback, global, result;
  if (done < 0) {
    /* Reaped by someone else: its status is lost. */
    napi_get_null(env, &code);
    napi_get_null(env, &sig);
  } else if (WIFSIGNALED(wstatus)) {
    napi_get_null(env, &code);
    napi_create_int32(env, WTERMSIG(wstatus), &sig);
  } else {
    napi_create_int32(env, WEXITSTATUS(wstatus), &code);
    napi_get_null(env, &sig);
  }
  napi_get_reference_value(env, child->on_exit, &callback);
  napi_delete_reference(env, child->on_exit);
  napi_get_global(env, &global);
  napi_value argv[2] = {code, sig};
  uv_close((uv_handle_t *)poll, on_closed);
  /* make_callback: microtasks and nextTicks queued by the callback run after it, as for any I/O callback. */
  if (napi_make_callback(env, async_context, global, callback, 2, argv, &result) == napi_pending_exception) {
    napi_value exception;
    napi_get_and_clear_last_exception(env, &exception);
    napi_fatal_exception(env, exception); /* an uncaught exception, as from any other callback */
  }
  napi_close_handle_scope(env, scope);
}

static napi_value spawn_process(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value args[8];
  CHECK(napi_get_cb_info(env, info, &argc, args, NULL, NULL));
  if (argc < 8) {
    napi_throw_type_error(env, NULL, "spawn takes 8 arguments");
    return NULL;
  }
  uint32_t argv_count = 0, env_count = 0;
  char *file = get_string(env, args[0]);
  char **argv = get_strings(env, args[1], &argv_count);
  char **envp = get_strings(env, args[2], &env_count);
  napi_valuetype cwd_type;
  napi_typeof(env, args[3], &cwd_type);
  char *cwd = cwd_type == napi_string ? get_string(env, args[3]) : NULL;
  int32_t stdin_fd, stdout_fd, stderr_fd;
  napi_get_value_int32(env, args[4], &stdin_fd);
  napi_get_value_int32(env, args[5], &stdout_fd);
  napi_get_value_int32(env, args[6], &stderr_fd);

  napi_value result = NULL;
  int pipe_fds[2] = {-1, -1};
  int error = 0;
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  if (!file || !argv || !envp || (cwd_type == napi_string && !cwd)) {
    error = ENOMEM;
    goto done;
  }
  if (stdin_fd == -2) {
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
      error = errno;
      goto done;
    }
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[0], 0);
  } else if (stdin_fd == -1) {
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  } else {
    posix_spawn_file_actions_adddup2(&actions, stdin_fd, 0);
  }
  posix_spawn_file_actions_adddup2(&actions, stdout_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, stderr_fd, 2);
  if (cwd) posix_spawn_file_actions_addchdir_np(&actions, cwd);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  pid_t pid;
  error = spawn_searching(&pid, file, &actions, &attr, argv, envp);
  if (error != 0) goto done;

  child_t *child = calloc(1, sizeof(child_t));
  int pidfd = pidfd_open(pid);
  if (!child || pidfd < 0) {
    /* It runs, but its exit could not be watched: end it rather than lose it. */
    error = child ? errno : ENOMEM;
    free(child);
    if (pidfd >= 0) close(pidfd);
    kill(-pid, SIGKILL);
    waitpid(pid, NULL, 0);
    goto done;
  }
  fcntl(pidfd, F_SETFD, FD_CLOEXEC);
  child->env = env;
  child->pid = pid;
  child->pidfd = pidfd;
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  napi_create_reference(env, args[7], 1, &child->on_exit);
  uv_poll_init(loop, &child->poll, pidfd);
  uv_poll_start(&child->poll, UV_READABLE, on_readable);

  char started[32];
  start_time(pid, started, sizeof started);
  napi_value items[3];
  napi_create_array_with_length(env, 3, &result);
  napi_create_int32(env, pid, &items[0]);
  napi_create_int32(env, pipe_fds[1], &items[1]);
  napi_create_string_utf8(env, started, NAPI_AUTO_LENGTH, &items[2]);
  for (uint32_t i = 0; i < 3; i++) napi_set_element(env, result, i, items[i]);
  pipe_fds[1] = -1; /* the caller's now */

done:
  if (pipe_fds[0] >= 0) close(pipe_fds[0]);
  if (pipe_fds[1] >= 0) close(pipe_fds[1]);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (error != 0) throw_errno(env, error, file ? file : "?");
  free(file);
  free(cwd);
  free_strings(argv, argv_count);
  free_strings(envp, env_count);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  /* Without pidfds (Linux < 5.3) there is no way here to learn of an exit: the addon is unusable. */
  int probe = pidfd_open(getpid());
  if (probe < 0) {
    napi_throw_error(env, "ENOSYS", "pidfd_open is not available (Linux 5.3 or later is needed)");
    return NULL;
  }
  close(probe);
  napi_value resource, name, fn;
  CHECK(napi_create_object(env, &resource));
  CHECK(napi_create_string_utf8(env, "task-manager:spawn", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_reference(env, resource, 1, &async_resource));
  CHECK(napi_async_init(env, resource, name, &async_context));
  CHECK(napi_create_function(env, "spawn", NAPI_AUTO_LENGTH, spawn_process, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "spawn", fn));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
