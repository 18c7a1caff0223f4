#ifndef SNAPCRON_CEXECSHIMS_H
#define SNAPCRON_CEXECSHIMS_H

#include <spawn.h>

/// pipe2(fds, O_CLOEXEC): both ends close-on-exec from the start, so no concurrent spawn inherits them.
int snapcron_exec_pipe_cloexec(int fds[2]);

/// POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF (GNU flags Swift's Glibc module hides).
short snapcron_exec_spawn_flags(void);

/// posix_spawn_file_actions_addclosefrom_np: close every descriptor from `from` up in the child.
int snapcron_exec_add_closefrom(posix_spawn_file_actions_t *actions, int from);

#endif
