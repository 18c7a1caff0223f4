// libsystemd's notify and journal APIs, for SnapcronSystemd only.
#ifndef SNAPCRON_CSYSTEMD_H
#define SNAPCRON_CSYSTEMD_H

#include <sys/uio.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

#endif
