// Linux calls that Swift's Glibc module does not export: timerfd and eventfd.
#ifndef SNAPCRON_CLINUXSHIMS_H
#define SNAPCRON_CLINUXSHIMS_H

#include <stdint.h>

/// A CLOCK_REALTIME timerfd armed at an absolute time, cancelled when the clock is set (TFD_TIMER_CANCEL_ON_SET).
/// Returns the fd, or -1 with errno set.
int snapcron_realtime_timer_at(int64_t seconds, int64_t nanoseconds);

/// An eventfd (close-on-exec) used to interrupt a poll; -1 with errno set on failure.
int snapcron_eventfd(void);

/// Blocks until `timer_fd` or `wakeup_fd` is readable. Returns 0 on the deadline, 1 when the realtime clock
/// was set (the timer was cancelled), 2 when woken through `wakeup_fd`.
int snapcron_wait_timer(int timer_fd, int wakeup_fd);

/// Makes `wakeup_fd` readable.
void snapcron_wake(int wakeup_fd);



/// Returns freed heap memory to the system (glibc malloc_trim); after a large schedule load the parser's
/// temporaries would otherwise stay in the resident set.
int snapcron_malloc_trim(void);

/// Allocations of at least `bytes` get pages of their own (mmap), returned to the system when freed. Setting it
/// turns off glibc's sliding threshold, which after the first large free serves later large buffers from the
/// heap, where freed ones stay resident.
int snapcron_malloc_fix_mmap_threshold(int bytes);
#endif
