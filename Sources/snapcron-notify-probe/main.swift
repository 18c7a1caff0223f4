// A tiny Type=notify service for the systemd end-to-end test (Tests/SystemdIntegrationTests).
//
// It logs one journal entry per SnapcronEvent with metadata, sends READY=1 with a STATUS=, pings the watchdog
// every WatchdogSec/2, stops pinging on SIGUSR1 (or from the start with --no-watchdog) so that systemd kills it,
// and answers SIGTERM with STOPPING=1 and exit status 0. --ready-delay-ms waits before READY=1, to show that
// `systemctl start` waits for it.
//
//     snapcron-notify-probe [--status TEXT] [--ready-delay-ms N] [--no-watchdog]

import Foundation
import Glibc
import Logging
import SnapcronSystemd

/// Exits with status 2 and the usage line: a bad unit file should fail loudly, not crash.
func usage() -> Never {
    FileHandle.standardError.write(
        Data("usage: snapcron-notify-probe [--status TEXT] [--ready-delay-ms N] [--no-watchdog]\n".utf8))
    exit(2)
}

var status = "probe ready"
var pinging = true
var readyDelayMilliseconds = 0
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--status":
        guard let text = arguments.popFirst() else { usage() }
        status = text
    case "--ready-delay-ms":
        guard let value = arguments.popFirst().flatMap(Int.init), value >= 0 else { usage() }
        readyDelayMilliseconds = value
    case "--no-watchdog":
        pinging = false
    default:
        usage()
    }
}

LogDestination.detect(environment: ProcessInfo.processInfo.environment).bootstrap(identifier: "snapcron-notify-probe")
let logger = Logger(label: "snapcron.probe")
let notifier = Notifier()

// The signals are taken synchronously with sigtimedwait, so the loop needs no handler and no second thread.
var signals = sigset_t()
sigemptyset(&signals)
for signal in [SIGTERM, SIGUSR1] {
    sigaddset(&signals, signal)
}
sigprocmask(SIG_BLOCK, &signals, nil)

for (index, event) in SnapcronEvent.all.enumerated() {
    logger.info(
        "Probe \(event.name)",
        metadata: [
            "event": "\(event)",
            "job": "probe-job",
            "run": "\(index + 1)",
            "target": "local:/srv/probe.qcow2",
            "image": "snapcron-probe-job-20261129T090000Z",
            "state": "active",
            "scheduled": "2026-11-29T09:00:00Z",
            "duration_ms": "5120",
            "error": "none: probe",
            "backend": "local",
            "probe.sequence": "\(index)",
        ]
    )
}
if readyDelayMilliseconds > 0 {
    usleep(UInt32(readyDelayMilliseconds) * 1000)
}
notifier.ready(status: status)

let interval = notifier.watchdogInterval ?? .seconds(1)
logger.notice(
    "Probe ready",
    metadata: [
        "notify": "\(notifier.isActive)",
        "watchdog_interval": "\(notifier.watchdogInterval.map { "\($0)" } ?? "off")",
        "pinging": "\(pinging)",
    ]
)

let (seconds, attoseconds) = interval.components
var timeout = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
while true {
    if pinging {
        notifier.watchdog()
    }
    let signal = sigtimedwait(&signals, nil, &timeout)
    switch signal {
    case SIGUSR1:
        pinging = false
        logger.warning("Probe stops pinging the watchdog")
    case SIGTERM:
        notifier.stopping()
        logger.info("Probe stopping", metadata: ["event": "\(SnapcronEvent.daemonStopping)"])
        exit(0)
    default:
        break  // Timeout (EAGAIN) or EINTR: ping again.
    }
}
