/** Names the directory the tests make their temp dirs in, set by the global setup for the whole run. */
export const TEST_ROOT_VARIABLE = 'TM_TEST_ROOT';
