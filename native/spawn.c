/*
 * Starts task processes with vfork and exec: the child shares the parent's
 * memory until it execs, so a start costs the same whatever the size of the
 * process that starts it, where fork (Node's child_process.spawn) copies its
 * page tables. This is what glibc's posix_spawn does (clone with CLONE_VM |
 * CLONE_VFORK), without the stack it maps and unmaps for every child.
 *
 * setBaseEnvironment(env)
 *   env     "NAME=value" strings every later start begins from
 *
 * spawn(file, argv, env, cwd, stdin, stdoutPath, stderrPath, limit, sync, onExit)
 *   file    program; without a slash it is looked up in the PATH of `env`
 *   argv    its argv, argv[0] included
 *   env     "NAME=value" strings laid over the base environment (a name here
 *           replaces the same name there)
 *   cwd     its working directory, or null for this process's own
 *   stdin   a file descriptor for its stdin, -1 for /dev/null, -2 for a new pipe
 *   stdoutPath, stderrPath  the files its stdout and stderr are kept in
 *   limit   the bytes kept of each stream; the rest is read and discarded
 *   sync    the files are fdatasync'ed (off the event loop) before onExit
 *   onExit  called once with (exitCode, signalNumber, stdoutBytes,
 *           stdoutTruncated, stderrBytes, stderrTruncated) when it has exited
 *           (and been reaped); one of exitCode and signalNumber is null
 * returns [pid, stdinWriteFd or -1, start time (field 22 of /proc/PID/stat)]
 * and throws an Error with `code` ("ENOENT", "EACCES", "ETXTBSY", ...) when
 * it could not start.
 *
 * The process is the leader of a new session and process group (setsid), with
 * every signal at its default action and none blocked. Its exit is learnt from
 * a pidfd watched by libuv (uv_poll), so nothing blocks the event loop and no
 * SIGCHLD handler is involved; libuv itself only reaps the processes it
 * spawned.
 *
 * Its stdout and stderr are pipes, moved into their files by splice (no copy
 * through this process) as they become readable; a file is created on its
 * stream's first byte. A task that prints nothing costs no file: creating and
 * removing two inodes per task was the largest part of a start's CPU here.
 * Past the limit the pipe is still drained, into /dev/null, so the task never
 * blocks on a full pipe. Once the process has exited, what is left in its
 * group is killed and the pipes are drained once more; what a process that
 * left the group writes after that is discarded, never added to a file whose
 * result is reported. Output still in a pipe when this process is killed is
 * lost: the executor drains a pipe as soon as it is readable, so that is
 * what the task wrote since (at most the pipe's 64 KiB), usually nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define CHECK(call)                                                                                                    \
  do {                                                                                                                 \
    if ((call) != napi_ok) return NULL;                                                                                \
  } while (0)

typedef struct child_s child_t;

/* One output stream: the read end of its pipe, and the file it goes to. */
typedef struct {
  uv_poll_t poll;
  child_t *child;
  int pipe_fd;
  int file_fd; /* -1 until its first byte */
  char *path;
  int64_t kept;
  int truncated; /* bytes were discarded: past the limit, or the file could not take them */
  int ended;     /* the pipe reached its end (or failed): nothing more comes */
  int lingering; /* its task has ended, but a process that left the group still holds the pipe */
  int copying;   /* the file system takes no splice: the output goes through a buffer */
} stream_t;

struct child_s {
  uv_poll_t exit_poll;
  stream_t streams[2];
  uv_work_t sync_work;
  napi_env env;
  napi_ref on_exit;
  pid_t pid;
  int pidfd;
  int64_t limit;
  int sync;
  int wstatus;
  int reaped; /* 1 with wstatus; -1 when another process reaped it and its status is lost */
  int open_handles;
};

static napi_async_context async_context;
static napi_ref async_resource;
static int dev_null = -1;
/* Pipes still drained for processes that outlived their task; past this many, such processes get
   EPIPE (and SIGPIPE) instead, so that they cannot hold this process's descriptors without bound. */
#define MAX_LINGERING 256
static int lingering = 0;

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

/* Field 22 of /proc/PID/stat, read there: the start time in clock ticks since boot, as text. */
static void read_start_time(pid_t pid, char *out, size_t size) {
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

/* Nanoseconds per clock tick of /proc (USER_HZ), set at load. */
static int64_t tick_ns = 0;

/* -1 if the clock cannot be read (then /proc is). */
static int64_t boottime_ns(void) {
  struct timespec now;
  if (clock_gettime(CLOCK_BOOTTIME, &now) != 0) return -1;
  return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

/*
 * The kernel stamps a child's start (CLOCK_BOOTTIME) while vfork runs, and /proc shows it in whole
 * ticks. When the readings before and after the vfork fall in the same tick, that tick is the
 * start time, and /proc need not be read (an open, a read and a close per start); otherwise it is.
 */
static uint32_t proc_start_reads = 0; /* how many start times were read from /proc */

static void start_time(pid_t pid, int64_t before_ns, int64_t after_ns, char *out, size_t size) {
  if (tick_ns > 0 && before_ns >= 0 && after_ns >= 0 && before_ns / tick_ns == after_ns / tick_ns) {
    snprintf(out, size, "%lld", (long long)(before_ns / tick_ns));
  } else {
    proc_start_reads++;
    read_start_time(pid, out, size);
  }
}

/* procStartReads(): how many start times so far were read from /proc rather than the clock. */
static napi_value get_proc_start_reads(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value count;
  napi_create_uint32(env, proc_start_reads, &count);
  return count;
}

/* The environment every start begins from: "NAME=value" strings, set by setBaseEnvironment. */
static char **base_env = NULL;
static uint32_t base_count = 0;

/* Whether two "NAME=value" strings have the same name. */
static int same_name(const char *a, const char *b) {
  while (*a && *a == *b && *a != '=') {
    a++;
    b++;
  }
  return *a == '=' && *b == '=';
}

/* The base environment with `own` laid over it: NULL-terminated, pointing into both. */
static char **environment(char **own, uint32_t own_count) {
  char **envp = malloc((base_count + own_count + 1) * sizeof(char *));
  if (!envp) return NULL;
  uint32_t n = 0;
  for (uint32_t i = 0; i < base_count; i++) {
    int replaced = 0;
    for (uint32_t j = 0; j < own_count && !replaced; j++) replaced = same_name(base_env[i], own[j]);
    if (!replaced) envp[n++] = base_env[i];
  }
  for (uint32_t j = 0; j < own_count; j++) envp[n++] = own[j];
  envp[n] = NULL;
  return envp;
}

static napi_value set_base_environment(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value args[1];
  CHECK(napi_get_cb_info(env, info, &argc, args, NULL, NULL));
  uint32_t count = 0;
  char **strings = argc < 1 ? NULL : get_strings(env, args[0], &count);
  if (!strings) {
    napi_throw_error(env, "ENOMEM", "setBaseEnvironment takes an array of strings");
    return NULL;
  }
  free_strings(base_env, base_count);
  base_env = strings;
  base_count = count;
  return NULL;
}

/* The PATH of the process's own environment, as execvp would take it. */
static const char *path_of(char **env) {
  for (char **entry = env; *entry; entry++)
    if (strncmp(*entry, "PATH=", 5) == 0) return *entry + 5;
  return "/usr/bin:/bin";
}

/* What the child is given between vfork and exec; `error` is how it tells why it could not exec. */
typedef struct {
  int stdin_fd; /* -1 for /dev/null */
  int stdout_fd;
  int stderr_fd;
  const char *cwd;
  volatile int error; /* written by the child, read by the parent once vfork returns */
  int64_t before_ns, after_ns; /* CLOCK_BOOTTIME around the vfork that started it */
} launch_t;

/*
 * The child, in the memory of this process until it execs: only async-signal-safe calls. Every
 * signal goes to its default action before any is unblocked, so that no handler of this process
 * runs in it (signals were blocked by the parent around vfork).
 */
static void __attribute__((noreturn, noinline)) exec_child(launch_t *launch, const char *file, char **argv, char **env) {
  struct sigaction default_action;
  memset(&default_action, 0, sizeof default_action);
  default_action.sa_handler = SIG_DFL;
  for (int signal_number = 1; signal_number < NSIG; signal_number++) sigaction(signal_number, &default_action, NULL);
  int input = launch->stdin_fd;
  if (setsid() < 0) goto failed;
  if (input < 0 && (input = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) goto failed;
  if (dup2(input, 0) < 0 || dup2(launch->stdout_fd, 1) < 0 || dup2(launch->stderr_fd, 2) < 0) goto failed;
  if (launch->cwd && chdir(launch->cwd) < 0) goto failed;
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  execve(file, argv, env);
failed:
  launch->error = errno;
  _exit(127);
}

/*
 * vfork and exec, as glibc's posix_spawn does with clone(CLONE_VM | CLONE_VFORK), but on this
 * thread's stack: posix_spawn maps a stack for each child and unmaps it after, and the unmap
 * flushes the TLB of every CPU running a thread of this process (about a tenth of a start's CPU).
 */
static int launch_file(pid_t *pid, const char *file, launch_t *launch, char **argv, char **env) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  launch->error = 0;
  launch->before_ns = boottime_ns();
  pid_t child = vfork();
  if (child == 0) exec_child(launch, file, argv, env);
  int error = child < 0 ? errno : launch->error;
  launch->after_ns = boottime_ns();
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (child < 0) return error;
  if (error != 0) {
    while (waitpid(child, NULL, 0) < 0 && errno == EINTR) continue; /* it exited (127) without exec */
    return error;
  }
  *pid = child;
  return 0;
}

static int spawn_file(pid_t *pid, const char *file, launch_t *launch, char **argv, char **env) {
  int error = launch_file(pid, file, launch, argv, env);
  if (error != ENOEXEC) return error;
  /* A script without "#!": run it with the shell, as execvp does. */
  uint32_t count = 0;
  while (argv[count]) count++;
  char **shell_argv = calloc(count + 2, sizeof(char *));
  if (!shell_argv) return ENOMEM;
  shell_argv[0] = "/bin/sh";
  shell_argv[1] = (char *)file;
  for (uint32_t i = 1; i < count; i++) shell_argv[i + 1] = argv[i];
  error = launch_file(pid, "/bin/sh", launch, shell_argv, env);
  free(shell_argv);
  return error;
}

/* Starts `file`, looking it up in the PATH of `env` (not this process's) when it has no slash. */
static int spawn_searching(pid_t *pid, const char *file, launch_t *launch, char **argv, char **env) {
  if (strchr(file, '/')) return spawn_file(pid, file, launch, argv, env);
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
        int error = spawn_file(pid, candidate, launch, argv, env);
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

static void free_child(child_t *child) {
  for (int i = 0; i < 2; i++) free(child->streams[i].path);
  free(child);
}

/* Each handle's fd is closed once libuv has let go of it; the child goes with the last. */
static void on_closed(uv_handle_t *handle) {
  child_t *child = handle->data;
  if (handle == (uv_handle_t *)&child->exit_poll) {
    close(child->pidfd);
  } else {
    stream_t *stream = (stream_t *)handle;
    close(stream->pipe_fd);
  }
  if (--child->open_handles == 0) free_child(child);
}

/* Where output that is not kept is read into, when it cannot be spliced: one for the whole process. */
static char scratch[65536];

/* Discards what the pipe holds: into /dev/null without a copy, or through a buffer where that fails. */
static ssize_t discard(int pipe_fd) {
  ssize_t n = splice(pipe_fd, NULL, dev_null, NULL, 1 << 20, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
  if (n >= 0 || errno != EINVAL) return n;
  return read(pipe_fd, scratch, sizeof scratch);
}

static void end_stream(stream_t *stream) {
  stream->ended = 1;
  uv_poll_stop(&stream->poll);
  if (stream->lingering) {
    lingering--;
    uv_close((uv_handle_t *)&stream->poll, on_closed);
  }
}

/*
 * Moves up to `room` bytes from the pipe to the end of the stream's file, counting them in `kept`:
 * with splice, or through a buffer on a file system that takes no splice (EINVAL). Returns the
 * bytes taken from the pipe, 0 at its end, or -1 with errno (EAGAIN: nothing there for now).
 */
static ssize_t move_to_file(stream_t *stream, size_t room) {
  if (!stream->copying) {
    loff_t offset = stream->kept;
    ssize_t n = splice(stream->pipe_fd, NULL, stream->file_fd, &offset, room, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    if (n > 0) stream->kept += n;
    if (n >= 0 || errno != EINVAL) return n;
    stream->copying = 1;
  }
  ssize_t n = read(stream->pipe_fd, scratch, room < sizeof scratch ? room : sizeof scratch);
  for (ssize_t done = 0; done < n;) {
    ssize_t written = pwrite(stream->file_fd, scratch + done, (size_t)(n - done), stream->kept);
    if (written <= 0) {
      if (written < 0 && errno == EINTR) continue;
      if (written == 0) errno = ENOSPC;
      return -1;
    }
    done += written;
    stream->kept += written;
  }
  return n;
}

/* The stream's file takes nothing more (it could not be made, or the disk is full): what it holds stands, the rest is discarded. */
static void give_up_file(stream_t *stream) {
  if (stream->file_fd >= 0) {
    close(stream->file_fd);
    if (stream->kept == 0) unlink(stream->path); /* no file for a stream said to hold nothing */
  }
  stream->file_fd = -2;
  stream->truncated = 1;
}

/* Makes the stream's file, starting with `length` bytes already read from the pipe. */
static void make_file(stream_t *stream, const char *start, size_t length) {
  stream->file_fd = open(stream->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (stream->file_fd >= 0 && (length == 0 || write(stream->file_fd, start, length) == (ssize_t)length)) stream->kept = (int64_t)length;
  else give_up_file(stream);
}

/* Moves what the pipe holds into the stream's file, up to the limit; past it, or when the file fails, discards it. */
static void drain(stream_t *stream) {
  child_t *child = stream->child;
  while (!stream->ended) {
    ssize_t n;
    if (stream->kept < child->limit && stream->file_fd != -2 && !stream->lingering) {
      if (stream->file_fd < 0) {
        /* The file is made once the pipe holds a byte, not for the end of a stream that stays empty; the
           first chunk goes in whole, so that a follower never sees it cut after its first byte. */
        int available = 0;
        if (ioctl(stream->pipe_fd, FIONREAD, &available) == 0 && available > 0) {
          make_file(stream, NULL, 0);
          continue;
        }
        char first; /* nothing there: the pipe's end, or a byte that has just come */
        n = read(stream->pipe_fd, &first, 1);
        if (n == 1) {
          make_file(stream, &first, 1);
          continue;
        }
      } else {
        size_t room = (size_t)(child->limit - stream->kept);
        n = move_to_file(stream, room < (1 << 20) ? room : (1 << 20));
        if (n > 0) continue;
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
          give_up_file(stream);
          continue;
        }
      }
    } else {
      n = discard(stream->pipe_fd);
      if (n > 0) {
        stream->truncated |= !stream->lingering;
        continue;
      }
    }
    /* Nothing was moved: nothing there for now, or the pipe's end (an error of the pipe ends it too). */
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    end_stream(stream);
  }
}

static void on_output(uv_poll_t *poll, int status, int events) {
  (void)events;
  stream_t *stream = (stream_t *)poll;
  if (status < 0) end_stream(stream); /* libuv has stopped watching it: nothing more can be read */
  else drain(stream);
}

static void sync_files(uv_work_t *work) {
  child_t *child = work->data;
  for (int i = 0; i < 2; i++)
    if (child->streams[i].file_fd >= 0) fdatasync(child->streams[i].file_fd);
}

/* Reports the exit to JavaScript, once the output is where it belongs, and lets go of the handles. */
static void report(uv_work_t *work, int status) {
  (void)status;
  child_t *child = work->data;
  napi_env env = child->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value argv[6], callback, global, result;
  if (child->reaped < 0) {
    napi_get_null(env, &argv[0]);
    napi_get_null(env, &argv[1]);
  } else if (WIFSIGNALED(child->wstatus)) {
    napi_get_null(env, &argv[0]);
    napi_create_int32(env, WTERMSIG(child->wstatus), &argv[1]);
  } else {
    napi_create_int32(env, WEXITSTATUS(child->wstatus), &argv[0]);
    napi_get_null(env, &argv[1]);
  }
  for (int i = 0; i < 2; i++) {
    stream_t *stream = &child->streams[i];
    if (stream->file_fd >= 0) close(stream->file_fd);
    napi_create_int64(env, stream->kept, &argv[2 + 2 * i]);
    napi_get_boolean(env, stream->truncated, &argv[3 + 2 * i]);
    if (!stream->lingering) uv_close((uv_handle_t *)&stream->poll, on_closed); /* a lingering one closes at its end */
  }
  napi_get_reference_value(env, child->on_exit, &callback);
  napi_delete_reference(env, child->on_exit);
  napi_get_global(env, &global);
  uv_close((uv_handle_t *)&child->exit_poll, on_closed);
  /* make_callback: microtasks and nextTicks queued by the callback run after it, as for any I/O callback. */
  if (napi_make_callback(env, async_context, global, callback, 6, argv, &result) == napi_pending_exception) {
    napi_value exception;
    napi_get_and_clear_last_exception(env, &exception);
    napi_fatal_exception(env, exception); /* an uncaught exception, as from any other callback */
  }
  napi_close_handle_scope(env, scope);
}

static void on_process_exit(uv_poll_t *poll, int status, int events) {
  (void)status;
  (void)events;
  child_t *child = poll->data;
  /* Whatever it left running in its group dies with it; while it is a zombie its pid, and so the
     group's id, cannot be taken by another process. */
  kill(-child->pid, SIGKILL);
  pid_t done = waitpid(child->pid, &child->wstatus, WNOHANG);
  if (done == 0) return; /* not yet: the pidfd stays readable until it is */
  child->reaped = done < 0 ? -1 : 1;
  uv_poll_stop(poll);
  /* All it wrote before it exited is in the pipes now. A process that left its group may still hold
     a pipe open: the end of the output is not waited for, and what that process writes later is
     discarded (as a task's output file would have stopped counting), so it neither blocks on a full
     pipe nor dies of SIGPIPE, nor writes into a file whose result is reported. */
  for (int i = 0; i < 2; i++) {
    stream_t *stream = &child->streams[i];
    drain(stream);
    if (stream->ended) continue;
    if (lingering < MAX_LINGERING) {
      stream->lingering = 1;
      lingering++;
    } else {
      uv_poll_stop(&stream->poll);
    }
  }
  child->sync_work.data = child;
  uv_loop_t *loop = uv_handle_get_loop((uv_handle_t *)poll);
  int written = child->streams[0].file_fd >= 0 || child->streams[1].file_fd >= 0;
  if (child->sync && written && uv_queue_work(loop, &child->sync_work, sync_files, report) == 0) return;
  report(&child->sync_work, 0);
}

static napi_value spawn_process(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value args[10];
  CHECK(napi_get_cb_info(env, info, &argc, args, NULL, NULL));
  if (argc < 10) {
    napi_throw_type_error(env, NULL, "spawn takes 10 arguments");
    return NULL;
  }
  uint32_t argv_count = 0, env_count = 0;
  char *file = get_string(env, args[0]);
  char **argv = get_strings(env, args[1], &argv_count);
  char **own_env = get_strings(env, args[2], &env_count);
  char **envp = own_env ? environment(own_env, env_count) : NULL;
  napi_valuetype cwd_type;
  napi_typeof(env, args[3], &cwd_type);
  char *cwd = cwd_type == napi_string ? get_string(env, args[3]) : NULL;
  int32_t stdin_fd;
  napi_get_value_int32(env, args[4], &stdin_fd);
  char *paths[2] = {get_string(env, args[5]), get_string(env, args[6])};
  int64_t limit;
  napi_get_value_int64(env, args[7], &limit);
  bool sync;
  napi_get_value_bool(env, args[8], &sync);

  napi_value result = NULL;
  child_t *child = NULL;
  int stdin_pipe[2] = {-1, -1};
  int output_pipes[2][2] = {{-1, -1}, {-1, -1}};
  int error = 0;
  launch_t launch = {.stdin_fd = stdin_fd >= 0 ? stdin_fd : -1, .cwd = cwd};
  if (!file || !argv || !envp || (cwd_type == napi_string && !cwd) || !paths[0] || !paths[1]) {
    error = ENOMEM;
    goto done;
  }
  if (stdin_fd == -2) {
    if (pipe2(stdin_pipe, O_CLOEXEC) != 0) {
      error = errno;
      goto done;
    }
    launch.stdin_fd = stdin_pipe[0];
  }
  for (int i = 0; i < 2; i++) {
    if (pipe2(output_pipes[i], O_CLOEXEC) != 0) {
      error = errno;
      goto done;
    }
    /* Only this end: the task's end stays blocking, as programs expect of their stdout. */
    fcntl(output_pipes[i][0], F_SETFL, O_NONBLOCK);
  }
  launch.stdout_fd = output_pipes[0][1];
  launch.stderr_fd = output_pipes[1][1];

  pid_t pid;
  error = spawn_searching(&pid, file, &launch, argv, envp);
  if (error != 0) goto done;

  child = calloc(1, sizeof(child_t));
  int pidfd = pidfd_open(pid);
  if (!child || pidfd < 0) {
    /* It runs, but its exit could not be watched: end it rather than lose it. */
    error = child ? errno : ENOMEM;
    free(child);
    child = NULL;
    if (pidfd >= 0) close(pidfd);
    kill(-pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) continue;
    goto done;
  }
  fcntl(pidfd, F_SETFD, FD_CLOEXEC);
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  child->env = env;
  child->pid = pid;
  child->pidfd = pidfd;
  child->limit = limit;
  child->sync = sync;
  child->open_handles = 3;
  napi_create_reference(env, args[9], 1, &child->on_exit);
  uv_poll_init(loop, &child->exit_poll, pidfd);
  child->exit_poll.data = child;
  for (int i = 0; i < 2; i++) {
    stream_t *stream = &child->streams[i];
    stream->child = child;
    stream->pipe_fd = output_pipes[i][0];
    stream->file_fd = -1;
    stream->path = paths[i];
    paths[i] = NULL; /* the stream's now */
    output_pipes[i][0] = -1;
    uv_poll_init(loop, &stream->poll, stream->pipe_fd);
    stream->poll.data = child;
    uv_poll_start(&stream->poll, UV_READABLE, on_output);
  }
  uv_poll_start(&child->exit_poll, UV_READABLE, on_process_exit);

  char started[32];
  start_time(pid, launch.before_ns, launch.after_ns, started, sizeof started);
  napi_value items[3];
  napi_create_array_with_length(env, 3, &result);
  napi_create_int32(env, pid, &items[0]);
  napi_create_int32(env, stdin_pipe[1], &items[1]);
  napi_create_string_utf8(env, started, NAPI_AUTO_LENGTH, &items[2]);
  for (uint32_t i = 0; i < 3; i++) napi_set_element(env, result, i, items[i]);
  stdin_pipe[1] = -1; /* the caller's now */

done:
  if (stdin_pipe[0] >= 0) close(stdin_pipe[0]);
  if (stdin_pipe[1] >= 0) close(stdin_pipe[1]);
  for (int i = 0; i < 2; i++) {
    /* The task holds its ends; this process keeps only the read ends, in their streams. */
    if (output_pipes[i][0] >= 0) close(output_pipes[i][0]);
    if (output_pipes[i][1] >= 0) close(output_pipes[i][1]);
    free(paths[i]);
  }
  if (error != 0) throw_errno(env, error, file ? file : "?");
  free(file);
  free(cwd);
  free_strings(argv, argv_count);
  free(envp);
  free_strings(own_env, env_count);
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
  long ticks_per_second = sysconf(_SC_CLK_TCK);
  if (ticks_per_second > 0) tick_ns = 1000000000 / ticks_per_second;
  dev_null = open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (dev_null < 0) {
    napi_throw_error(env, "ENOENT", "/dev/null could not be opened");
    return NULL;
  }
  napi_value resource, name, fn;
  CHECK(napi_create_object(env, &resource));
  CHECK(napi_create_string_utf8(env, "task-manager:spawn", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_reference(env, resource, 1, &async_resource));
  CHECK(napi_async_init(env, resource, name, &async_context));
  CHECK(napi_create_function(env, "spawn", NAPI_AUTO_LENGTH, spawn_process, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "spawn", fn));
  CHECK(napi_create_function(env, "setBaseEnvironment", NAPI_AUTO_LENGTH, set_base_environment, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "setBaseEnvironment", fn));
  CHECK(napi_create_function(env, "procStartReads", NAPI_AUTO_LENGTH, get_proc_start_reads, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "procStartReads", fn));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
