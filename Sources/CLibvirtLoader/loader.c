#include "snapcron_libvirt.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#define SNAPCRON_LIBVIRT_FUNCTIONS \
    X(virInitialize) X(virSetErrorFunc) X(virGetLastError) X(virResetLastError) X(virEventRegisterDefaultImpl) \
    X(virEventRunDefaultImpl) X(virConnectOpen) X(virConnectClose) X(virConnectIsAlive) X(virConnectSetKeepAlive) \
    X(virDomainLookupByName) X(virDomainLookupByUUIDString) X(virDomainFree) X(virDomainGetName) \
    X(virDomainGetUUIDString) X(virDomainGetXMLDesc) X(virDomainIsActive) X(virDomainBlockCommit) \
    X(virDomainBlockJobAbort) X(virDomainGetBlockJobInfo) X(virDomainListAllSnapshots) \
    X(virDomainSnapshotCreateXML) X(virDomainSnapshotDelete) X(virDomainSnapshotFree) X(virDomainSnapshotGetName) \
    X(virDomainSnapshotGetXMLDesc) X(virDomainSnapshotLookupByName) X(virDomainDestroy) X(virDomainUndefineFlags)

// Every function, resolved once when the library is loaded (never written after that).
static struct {
#define X(name) __typeof__(&name) name;
    SNAPCRON_LIBVIRT_FUNCTIONS
#undef X
} api;
static int loaded;
static char loadError[512];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void load(void) {
    void *library = dlopen("libvirt.so.0", RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        const char *error = dlerror();
        snprintf(loadError, sizeof loadError, "%s", error ? error : "dlopen of libvirt.so.0 failed");
        return;
    }
#define X(name)                                                                                   \
    api.name = (__typeof__(api.name))dlsym(library, #name);                                       \
    if (api.name == NULL) {                                                                       \
        snprintf(loadError, sizeof loadError, "libvirt.so.0 has no %s (libvirt too old)", #name); \
        return;                                                                                   \
    }
    SNAPCRON_LIBVIRT_FUNCTIONS
#undef X
    loaded = 1;
}

int snapcron_libvirt_load(void) {
    pthread_once(&once, load);
    return loaded;
}

const char *snapcron_libvirt_load_error(void) {
    pthread_once(&once, load);
    return loaded ? NULL : loadError;
}

// Each wrapper answers as its libvirt function does on failure when the library is not there.
#define CALL(name, failure, ...) return snapcron_libvirt_load() ? api.name(__VA_ARGS__) : (failure)

int snapcron_virInitialize(void) { CALL(virInitialize, -1, ); }
void snapcron_virSetErrorFunc(void *userData, virErrorFunc handler) {
    if (snapcron_libvirt_load()) api.virSetErrorFunc(userData, handler);
}
virErrorPtr snapcron_virGetLastError(void) { CALL(virGetLastError, NULL, ); }
void snapcron_virResetLastError(void) {
    if (snapcron_libvirt_load()) api.virResetLastError();
}
int snapcron_virEventRegisterDefaultImpl(void) { CALL(virEventRegisterDefaultImpl, -1, ); }
int snapcron_virEventRunDefaultImpl(void) { CALL(virEventRunDefaultImpl, -1, ); }
virConnectPtr snapcron_virConnectOpen(const char *name) { CALL(virConnectOpen, NULL, name); }
int snapcron_virConnectClose(virConnectPtr conn) { CALL(virConnectClose, -1, conn); }
int snapcron_virConnectIsAlive(virConnectPtr conn) { CALL(virConnectIsAlive, -1, conn); }
int snapcron_virConnectSetKeepAlive(virConnectPtr conn, int interval, unsigned int count) {
    CALL(virConnectSetKeepAlive, -1, conn, interval, count);
}
virDomainPtr snapcron_virDomainLookupByName(virConnectPtr conn, const char *name) {
    CALL(virDomainLookupByName, NULL, conn, name);
}
virDomainPtr snapcron_virDomainLookupByUUIDString(virConnectPtr conn, const char *uuid) {
    CALL(virDomainLookupByUUIDString, NULL, conn, uuid);
}
int snapcron_virDomainFree(virDomainPtr domain) { CALL(virDomainFree, -1, domain); }
const char *snapcron_virDomainGetName(virDomainPtr domain) { CALL(virDomainGetName, NULL, domain); }
int snapcron_virDomainGetUUIDString(virDomainPtr domain, char *buf) { CALL(virDomainGetUUIDString, -1, domain, buf); }
char *snapcron_virDomainGetXMLDesc(virDomainPtr domain, unsigned int flags) {
    CALL(virDomainGetXMLDesc, NULL, domain, flags);
}
int snapcron_virDomainIsActive(virDomainPtr dom) { CALL(virDomainIsActive, -1, dom); }
int snapcron_virDomainBlockCommit(
    virDomainPtr dom, const char *disk, const char *base, const char *top, unsigned long bandwidth,
    unsigned int flags) {
    CALL(virDomainBlockCommit, -1, dom, disk, base, top, bandwidth, flags);
}
int snapcron_virDomainBlockJobAbort(virDomainPtr dom, const char *disk, unsigned int flags) {
    CALL(virDomainBlockJobAbort, -1, dom, disk, flags);
}
int snapcron_virDomainGetBlockJobInfo(
    virDomainPtr dom, const char *disk, virDomainBlockJobInfoPtr info, unsigned int flags) {
    CALL(virDomainGetBlockJobInfo, -1, dom, disk, info, flags);
}
int snapcron_virDomainListAllSnapshots(virDomainPtr domain, virDomainSnapshotPtr **snaps, unsigned int flags) {
    CALL(virDomainListAllSnapshots, -1, domain, snaps, flags);
}
virDomainSnapshotPtr snapcron_virDomainSnapshotCreateXML(virDomainPtr domain, const char *xmlDesc, unsigned int flags) {
    CALL(virDomainSnapshotCreateXML, NULL, domain, xmlDesc, flags);
}
int snapcron_virDomainSnapshotDelete(virDomainSnapshotPtr snapshot, unsigned int flags) {
    CALL(virDomainSnapshotDelete, -1, snapshot, flags);
}
int snapcron_virDomainSnapshotFree(virDomainSnapshotPtr snapshot) { CALL(virDomainSnapshotFree, -1, snapshot); }
const char *snapcron_virDomainSnapshotGetName(virDomainSnapshotPtr snapshot) {
    CALL(virDomainSnapshotGetName, NULL, snapshot);
}
char *snapcron_virDomainSnapshotGetXMLDesc(virDomainSnapshotPtr snapshot, unsigned int flags) {
    CALL(virDomainSnapshotGetXMLDesc, NULL, snapshot, flags);
}
virDomainSnapshotPtr snapcron_virDomainSnapshotLookupByName(virDomainPtr domain, const char *name, unsigned int flags) {
    CALL(virDomainSnapshotLookupByName, NULL, domain, name, flags);
}
int snapcron_virDomainDestroy(virDomainPtr domain) { CALL(virDomainDestroy, -1, domain); }
int snapcron_virDomainUndefineFlags(virDomainPtr domain, unsigned int flags) {
    CALL(virDomainUndefineFlags, -1, domain, flags);
}
