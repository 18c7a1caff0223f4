#define _GNU_SOURCE
#include "CExecShims.h"

#include <fcntl.h>
#include <unistd.h>

int snapcron_exec_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

short snapcron_exec_spawn_flags(void) {
    return POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
}

int snapcron_exec_add_closefrom(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}
