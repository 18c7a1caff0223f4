import Foundation
import TestThreads
import Testing

/// The shipped alert rules (etc/prometheus) and Grafana dashboard (etc/grafana), checked with the real `promtool`
/// (Debian's `prometheus` package, which `scripts/install-deps --tests` installs): the rules load, their unit tests
/// pass, and every dashboard query parses and asks only for metrics snapcrond exports.
@Suite(.onOwnThreads) struct PrometheusRuleTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let rules = "etc/prometheus/snapcron-alerts.yml"
    static let ruleTests = "etc/prometheus/snapcron-alerts.test.yml"
    static let dashboard = "etc/grafana/snapcron-dashboard.json"

    /// The metric families snapcrond exports on /metrics, the histogram by its family name.
    static let families: Set<String> = [
        "snapcron_up", "snapcron_build_info", "snapcron_jobs", "snapcron_job_paused",
        "snapcron_job_next_fire_timestamp_seconds", "snapcron_job_last_fire_timestamp_seconds",
        "snapcron_job_last_success_timestamp_seconds", "snapcron_job_newest_image_timestamp_seconds",
        "snapcron_job_period_seconds", "snapcron_runs_total", "snapcron_run_duration_seconds", "snapcron_images",
        "snapcron_image_bytes", "snapcron_retention_deleted_total", "snapcron_backend_requests_total",
    ]
    static let histograms: Set<String> = ["snapcron_run_duration_seconds"]

    /// The names a query may use: each family, and a histogram's `_bucket`, `_sum` and `_count` series.
    static let seriesNames: Set<String> = families.subtracting(histograms)
        .union(histograms.flatMap { name in ["_bucket", "_sum", "_count"].map { name + $0 } })

    /// The family a series name belongs to.
    static func family(of name: String) -> String {
        for histogram in histograms {
            for suffix in ["_bucket", "_sum", "_count"] where name == histogram + suffix { return histogram }
        }
        return name
    }

    // MARK: Alert rules

    @Test func alertRulesPassPromtoolCheck() throws {
        let result = try Self.promtool("check", "rules", Self.rules)
        #expect(result.status == 0, "promtool check rules \(Self.rules) exited \(result.status):\n\(result.output)")
    }

    @Test func alertRulesPassTheirUnitTests() throws {
        let result = try Self.promtool("test", "rules", Self.ruleTests)
        #expect(result.status == 0, "promtool test rules \(Self.ruleTests) exited \(result.status):\n\(result.output)")
    }

    // MARK: Dashboard

    @Test func dashboardQueriesUseOnlyExportedMetrics() throws {
        let queries = try Self.dashboardQueries()
        #expect(queries.count >= 10, "found only \(queries.count) queries in \(Self.dashboard)")
        var used: Set<String> = []
        for query in queries {
            let names = query.expr.matches(of: #/snapcron_[A-Za-z0-9_]+/#).map { String($0.output) }
            for name in names {
                let exported = Self.seriesNames.contains(name)
                #expect(exported, "\(query.origin) asks for \(name), which is not exported")
                used.insert(Self.family(of: name))
            }
        }
        // Every family has its place on the dashboard: a new metric gets a panel (or leaves this list knowingly).
        let missing = Self.families.subtracting(used).sorted()
        #expect(missing.isEmpty, "not on the dashboard: \(missing)")
    }

    /// Each panel query is a valid PromQL expression: promtool checks them as recording rules, with Grafana's
    /// variables filled in (`$__rate_interval` as 5m, `$instance` and `$job` as `.*`).
    @Test func dashboardQueriesParse() throws {
        let queries = try Self.dashboardQueries().filter { $0.isPanelQuery }
        let rules: [[String: String]] = queries.enumerated().map { index, query in
            let expr = query.expr.replacing(#/\$__[A-Za-z_]+/#, with: "5m")
                .replacing(#/\$\{?[A-Za-z_]+\}?/#, with: ".*")
            return ["record": "dashboard_query_\(index)", "expr": expr]
        }
        // YAML is a superset of JSON: promtool reads the rule file as written by JSONSerialization.
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("snapcron-dashboard-\(UUID()).yml")
        let groups = ["groups": [["name": "dashboard", "rules": rules]]]
        let options: JSONSerialization.WritingOptions = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try JSONSerialization.data(withJSONObject: groups, options: options).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let result = try Self.promtool("check", "rules", file.path)
        let origins = queries.enumerated().map { "dashboard_query_\($0.offset): \($0.element.origin)" }
        #expect(
            result.status == 0,
            "a dashboard query does not parse:\n\(result.output)\n\(origins.joined(separator: "\n"))")
    }

    @Test func dashboardHasItsVariablesAndATemplatedDataSource() throws {
        let dashboard = try Self.loadDashboard()
        let variables = try #require((dashboard["templating"] as? [String: Any])?["list"] as? [[String: Any]])
        let byName = Dictionary(variables.map { ($0["name"] as? String ?? "", $0) }, uniquingKeysWith: { a, _ in a })
        #expect(byName["DS_PROMETHEUS"]?["type"] as? String == "datasource")
        #expect(byName["DS_PROMETHEUS"]?["query"] as? String == "prometheus")
        #expect(byName["instance"]?["type"] as? String == "query")
        let job = try #require(byName["job"], "no job variable")
        #expect(job["type"] as? String == "query")
        #expect(job["multi"] as? Bool == true, "the job variable is not multi-select")
        #expect(Self.variableQuery(job).contains("label_values(snapcron_job_period_seconds"))
        #expect((dashboard["schemaVersion"] as? Int ?? 0) >= 38)

        // Every panel and query reads the templated data source, so the file imports into any Grafana.
        for panel in Self.panels(of: dashboard) where panel["type"] as? String != "row" {
            let title = panel["title"] as? String ?? "?"
            #expect(Self.dataSourceUID(panel["datasource"]) == "${DS_PROMETHEUS}", "panel \(title)")
            let targets = panel["targets"] as? [[String: Any]] ?? []
            #expect(!targets.isEmpty, "panel \(title) has no query")
            for target in targets {
                #expect(Self.dataSourceUID(target["datasource"]) == "${DS_PROMETHEUS}", "panel \(title)")
            }
        }
    }

    // MARK: Support

    /// One query of the dashboard and where it is.
    struct Query {
        var expr: String
        var origin: String
        var isPanelQuery: Bool
    }

    static func loadDashboard() throws -> [String: Any] {
        let data = try Data(contentsOf: packageRoot.appendingPathComponent(dashboard))
        return try #require(
            try JSONSerialization.jsonObject(with: data) as? [String: Any], "\(dashboard) is not an object")
    }

    /// The panels, those inside (collapsed) rows included.
    static func panels(of container: [String: Any]) -> [[String: Any]] {
        (container["panels"] as? [[String: Any]] ?? []).flatMap { [$0] + panels(of: $0) }
    }

    /// Every panel target's `expr`, and every query variable's query.
    static func dashboardQueries() throws -> [Query] {
        let dashboard = try loadDashboard()
        var queries: [Query] = []
        for panel in panels(of: dashboard) {
            for target in panel["targets"] as? [[String: Any]] ?? [] {
                guard let expr = target["expr"] as? String else { continue }
                let origin = "panel \"\(panel["title"] as? String ?? "?")\" query \(target["refId"] as? String ?? "?")"
                queries.append(Query(expr: expr, origin: origin, isPanelQuery: true))
            }
        }
        let variables = (dashboard["templating"] as? [String: Any])?["list"] as? [[String: Any]] ?? []
        for variable in variables where variable["type"] as? String == "query" {
            let origin = "variable \(variable["name"] as? String ?? "?")"
            queries.append(Query(expr: variableQuery(variable), origin: origin, isPanelQuery: false))
        }
        return queries
    }

    /// A query variable's query: a string, or `{"query": ...}` as Grafana 10 saves it.
    static func variableQuery(_ variable: [String: Any]) -> String {
        if let query = variable["query"] as? String { return query }
        return (variable["query"] as? [String: Any])?["query"] as? String ?? ""
    }

    static func dataSourceUID(_ value: Any?) -> String? {
        (value as? [String: Any])?["uid"] as? String ?? value as? String
    }

    /// `promtool` on the PATH; CI installs it (Debian's `prometheus` package), so its absence fails the tests.
    static let promtoolPath: String? = {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return (path.split(separator: ":").map(String.init) + ["/usr/bin"]).map { $0 + "/promtool" }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    /// Runs promtool in the package root; its stdout and stderr together.
    static func promtool(_ arguments: String...) throws -> (status: Int32, output: String) {
        let executable = try #require(
            promtoolPath, "promtool is not installed (Debian's prometheus package): run scripts/install-deps --tests")
        let result = run(executable, arguments, in: packageRoot)
        return (result.status, result.output)
    }
}
