// libvirt's client API, loaded when first used (dlopen of libvirt.so.0): a daemon without a libvirt backend never
// maps libvirt and its dependencies (about 10 MB resident). The libvirt backend calls these snapcron_ wrappers
// instead of libvirt's functions; the types and constants come from libvirt's own headers.
#ifndef SNAPCRON_LIBVIRT_H
#define SNAPCRON_LIBVIRT_H

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

/// 1 when libvirt.so.0 is loaded (it is loaded on the first call), else 0.
int snapcron_libvirt_load(void);
/// Why loading failed (dlerror's text), or NULL.
const char *snapcron_libvirt_load_error(void);

int snapcron_virInitialize(void);
void snapcron_virSetErrorFunc(void *userData, virErrorFunc handler);
virErrorPtr snapcron_virGetLastError(void);
void snapcron_virResetLastError(void);
int snapcron_virEventRegisterDefaultImpl(void);
int snapcron_virEventRunDefaultImpl(void);
virConnectPtr snapcron_virConnectOpen(const char *name);
int snapcron_virConnectClose(virConnectPtr conn);
int snapcron_virConnectIsAlive(virConnectPtr conn);
int snapcron_virConnectSetKeepAlive(virConnectPtr conn, int interval, unsigned int count);
virDomainPtr snapcron_virDomainLookupByName(virConnectPtr conn, const char *name);
virDomainPtr snapcron_virDomainLookupByUUIDString(virConnectPtr conn, const char *uuid);
int snapcron_virDomainFree(virDomainPtr domain);
const char *snapcron_virDomainGetName(virDomainPtr domain);
int snapcron_virDomainGetUUIDString(virDomainPtr domain, char *buf);
char *snapcron_virDomainGetXMLDesc(virDomainPtr domain, unsigned int flags);
int snapcron_virDomainIsActive(virDomainPtr dom);
int snapcron_virDomainBlockCommit(
    virDomainPtr dom, const char *disk, const char *base, const char *top, unsigned long bandwidth,
    unsigned int flags);
int snapcron_virDomainBlockJobAbort(virDomainPtr dom, const char *disk, unsigned int flags);
int snapcron_virDomainGetBlockJobInfo(
    virDomainPtr dom, const char *disk, virDomainBlockJobInfoPtr info, unsigned int flags);
int snapcron_virDomainListAllSnapshots(virDomainPtr domain, virDomainSnapshotPtr **snaps, unsigned int flags);
virDomainSnapshotPtr snapcron_virDomainSnapshotCreateXML(virDomainPtr domain, const char *xmlDesc, unsigned int flags);
int snapcron_virDomainSnapshotDelete(virDomainSnapshotPtr snapshot, unsigned int flags);
int snapcron_virDomainSnapshotFree(virDomainSnapshotPtr snapshot);
const char *snapcron_virDomainSnapshotGetName(virDomainSnapshotPtr snapshot);
char *snapcron_virDomainSnapshotGetXMLDesc(virDomainSnapshotPtr snapshot, unsigned int flags);
virDomainSnapshotPtr snapcron_virDomainSnapshotLookupByName(virDomainPtr domain, const char *name, unsigned int flags);
int snapcron_virDomainDestroy(virDomainPtr domain);
int snapcron_virDomainUndefineFlags(virDomainPtr domain, unsigned int flags);

#endif
