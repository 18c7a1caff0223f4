import SnapshotBackend
import Testing

@Suite struct ImageStateTests {
    static let all: [ImageState] = [.queued, .saving, .active, .error("disk full"), .gone]

    @Test(arguments: all)
    func stringValueRoundTrips(_ state: ImageState) {
        #expect(ImageState(stringValue: state.stringValue, reason: state.errorReason) == state)
    }

    @Test func stringValuesAreStable() {
        #expect(Self.all.map(\.stringValue) == ["queued", "saving", "active", "error", "gone"])
        #expect(ImageState(stringValue: "ACTIVE") == nil)
        #expect(ImageState(stringValue: "error") == .error("unknown error"))
    }

    @Test func onlyUnfinishedStatesAreNotFinal() {
        #expect(Self.all.filter { !$0.isFinal } == [.queued, .saving])
    }

    @Test func errorReasonOnlyForErrors() {
        #expect(ImageState.error("boom").errorReason == "boom")
        #expect(ImageState.active.errorReason == nil)
        #expect("\(ImageState.error("boom"))" == "error(boom)")
    }
}

@Suite struct SnapshotBackendErrorTests {
    @Test func describesWhatFailedOnWhat() {
        let error = SnapshotBackendError.permanent(
            backend: "local", .create, target: "/var/lib/lab.qcow2", "target does not exist")
        #expect("\(error)" == "local create failed for /var/lib/lab.qcow2: target does not exist (permanent)")
        #expect(!error.isTransient)
        #expect(error.operation == .create)
    }

    @Test func namesTheImageAndMarksTransient() {
        let error = SnapshotBackendError.transient(
            backend: "twcc", .status, target: "101", image: ImageRef(id: "img-9"), "http 503")
        #expect("\(error)" == "twcc status failed for image img-9 of 101: http 503 (transient)")
        #expect(error.isTransient)
    }
}
