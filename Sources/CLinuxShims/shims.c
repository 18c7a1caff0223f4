#define _GNU_SOURCE
#include "CLinuxShims.h"

#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

int snapcron_realtime_timer_at(int64_t seconds, int64_t nanoseconds) {
    int fd = timerfd_create(CLOCK_REALTIME, TFD_CLOEXEC);
    if (fd < 0) return -1;
    struct itimerspec spec = {0};
    spec.it_value.tv_sec = seconds;
    spec.it_value.tv_nsec = nanoseconds;
    if (spec.it_value.tv_sec <= 0 && spec.it_value.tv_nsec <= 0) spec.it_value.tv_nsec = 1; /* zero disarms */
    if (timerfd_settime(fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &spec, NULL) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int snapcron_eventfd(void) { return eventfd(0, EFD_CLOEXEC); }

int snapcron_wait_timer(int timer_fd, int wakeup_fd) {
    struct pollfd fds[2] = {{.fd = timer_fd, .events = POLLIN}, {.fd = wakeup_fd, .events = POLLIN}};
    for (;;) {
        int ready = poll(fds, 2, -1);
        if (ready < 0 && errno == EINTR) continue;
        if (fds[1].revents & POLLIN) return 2;
        if (fds[0].revents & POLLIN) {
            uint64_t expirations;
            if (read(timer_fd, &expirations, sizeof expirations) < 0 && errno == ECANCELED) return 1;
            return 0;
        }
        if (ready < 0) return 0;
    }
}

void snapcron_wake(int wakeup_fd) {
    uint64_t one = 1;
    ssize_t ignored = write(wakeup_fd, &one, sizeof one);
    (void)ignored;
}

#include <malloc.h>

int snapcron_malloc_trim(void) { return malloc_trim(0); }

int snapcron_malloc_fix_mmap_threshold(int bytes) { return mallopt(M_MMAP_THRESHOLD, bytes); }
