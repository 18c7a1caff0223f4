// libvirt's client API, for the libvirt backend only (Sources/Backends/Libvirt).
#ifndef SNAPCRON_CLIBVIRT_H
#define SNAPCRON_CLIBVIRT_H

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#endif
