import Foundation

/// A binary min-heap. The scheduler keeps two: job fires and run timers (polls, retries, timeouts). Entries that
/// went stale (a reloaded job, a run that moved on) are dropped lazily when they surface, so updates cost
/// O(log n) and never a search.
struct MinHeap<Element: Comparable> {
    private var heap: [Element] = []

    var isEmpty: Bool { heap.isEmpty }
    var count: Int { heap.count }
    var first: Element? { heap.first }

    mutating func push(_ element: Element) {
        heap.append(element)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child] < heap[parent] else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func popFirst() -> Element? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        siftDown(from: 0)
        return top
    }

    /// Rebuilds the heap from scratch in O(n) (used when a schedule of many jobs is loaded).
    mutating func replaceAll(with elements: [Element]) {
        heap = elements
        guard heap.count > 1 else { return }
        for start in stride(from: heap.count / 2 - 1, through: 0, by: -1) { siftDown(from: start) }
    }

    private mutating func siftDown(from start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < heap.count && heap[left] < heap[smallest] { smallest = left }
            if right < heap.count && heap[right] < heap[smallest] { smallest = right }
            guard smallest != parent else { return }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
    }
}

/// A job fire waiting in the scheduler's queue.
struct FireEntry: Comparable {
    /// When to act: the scheduled instant plus the job's jitter.
    var due: Date
    /// The nominal fire instant the cron expression gives.
    var scheduled: Date
    var job: String
    /// The job's generation when queued; a reload or pause bumps it and the entry goes stale.
    var generation: Int

    static func < (lhs: FireEntry, rhs: FireEntry) -> Bool { lhs.due < rhs.due }
    static func == (lhs: FireEntry, rhs: FireEntry) -> Bool { lhs.due == rhs.due && lhs.job == rhs.job }
}

/// A moment when a run needs attention: a create or poll falls due, or its timeout expires.
struct RunTimer: Comparable {
    var due: Date
    var run: Int64

    static func < (lhs: RunTimer, rhs: RunTimer) -> Bool { lhs.due < rhs.due }
}
