//! /proc readers, medians and the printed table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// One load generator run: its `key=value` output.
pub type Fields = BTreeMap<String, f64>;

// DESIGN §4, L7.
const TARGET_CPU_US: f64 = 20.0;
const TARGET_P99_VS_ENVOY: f64 = 0.5;
const TARGET_REBUILD_MS: f64 = 100.0;

/// `key=value` fields of a load generator's output.
pub fn fields(output: &str) -> Fields {
    output
        .split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// A numeric `key=value` field of a log line (tracing's format).
pub fn log_field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace().find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.trim_matches('"').parse().ok())?
    })
}

pub fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// VmRSS in MB (10^6 bytes).
pub fn rss_mb(pid: u32) -> Result<f64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|kb| kb * 1024.0 / 1e6)
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

pub fn median_of(rounds: &[Fields], value: impl Fn(&Fields) -> Option<f64>) -> f64 {
    let mut values: Vec<f64> = rounds.iter().filter_map(value).collect();
    median(&mut values)
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "MISS"
    }
}

pub struct Inputs<'a> {
    pub labels: &'a [&'a str],
    pub proxies: &'a [bool],
    pub rounds: &'a [Vec<Fields>],
    pub idle_rss: &'a [f64],
    pub after_rss: &'a [f64],
    pub compile_ms: &'a [f64],
    pub route_count: usize,
    pub swap: &'a Fields,
    pub swap_error: Option<String>,
    pub live_in: Option<f64>,
    pub live_out: Option<f64>,
    pub big_error: Option<String>,
    pub small_error: Option<String>,
    pub routed: bool,
    pub setup: Duration,
    pub load_time: Duration,
}

/// Per variant: CPU µs/request, p50, p99, p99.9 (ms), peak RSS under load (MB), failures.
struct Row {
    cpu_us: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    achieved: f64,
    load_rss: f64,
    failed: f64,
    requests: f64,
}

fn row(rounds: &[Fields]) -> Row {
    let get = |key: &'static str| move |f: &Fields| f.get(key).copied();
    Row {
        cpu_us: median_of(rounds, |f| {
            Some(f.get("proxy_cpu_us")? / f.get("requests")?)
        }),
        p50: median_of(rounds, get("p50_us")) / 1e3,
        p99: median_of(rounds, get("p99_us")) / 1e3,
        p999: median_of(rounds, get("p999_us")) / 1e3,
        achieved: median_of(rounds, get("achieved_per_s")),
        load_rss: median_of(rounds, get("proxy_rss_peak_kb")) * 1024.0 / 1e6,
        failed: rounds.iter().filter_map(|f| f.get("failed")).sum(),
        requests: rounds.iter().filter_map(|f| f.get("requests")).sum(),
    }
}

pub fn render(input: &Inputs<'_>) -> String {
    let rows: Vec<Row> = input.rounds.iter().map(|r| row(r)).collect();
    let mut out = String::new();
    let rounds = input.rounds.first().map_or(0, Vec::len);
    let _ = writeln!(
        out,
        "\nwaypoint_l7: topology (b), loopback in one bench-created netns; open loop {} req/s, {} rounds per variant (medians), 20 HTTPRoute rules, request takes rule 15",
        super::RATE,
        rounds
    );
    let _ = writeln!(
        out,
        "  waypoint and Envoy-HBONE pay mTLS + HTTP/2 CONNECT on both sides (client tunnel in, tunnel to the backend pod out);"
    );
    let _ = writeln!(
        out,
        "  Envoy-plain pays neither (HTTP/1.1 over TCP both sides). Baseline rows: CPU is the backend's / hbone-backend's, not a proxy's.\n"
    );
    let _ = writeln!(
        out,
        "{:<30} {:>11} {:>8} {:>8} {:>9} {:>10} {:>9} {:>9} {:>9} {:>11}",
        "variant",
        "CPU µs/req",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "achieved/s",
        "RSS idle",
        "RSS load",
        "RSS after",
        "failed"
    );
    let _ = writeln!(out, "{}", "-".repeat(124));
    for (i, row) in rows.iter().enumerate() {
        let cpu = if input.proxies[i] {
            format!("{:.1}", row.cpu_us)
        } else {
            format!("({:.1})", row.cpu_us)
        };
        let _ = writeln!(
            out,
            "{:<30} {:>11} {:>8.3} {:>8.3} {:>9.3} {:>10.0} {:>6.1} MB {:>6.1} MB {:>6.1} MB {:>5}/{:<5}",
            input.labels[i],
            cpu,
            row.p50,
            row.p99,
            row.p999,
            row.achieved,
            input.idle_rss[i],
            row.load_rss,
            input.after_rss[i],
            row.failed,
            row.requests,
        );
    }
    // Variant order is fixed in run(): direct, direct-HBONE, Envoy-plain, Envoy-HBONE, waypoint.
    let (hop, plain, hbone, wp) = (&rows[1], &rows[2], &rows[3], &rows[4]);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<52} {:>12} {:>12}  {:<18} verdict",
        "target (DESIGN §4)", "figure", "ratio", "target"
    );
    let _ = writeln!(out, "{}", "-".repeat(110));
    let mut line = |what: &str, figure: String, ratio: f64, target: &str, pass: Option<bool>| {
        let _ = writeln!(
            out,
            "{what:<52} {figure:>12} {:>11.2}×  {target:<18} {}",
            ratio,
            pass.map_or("", verdict)
        );
    };
    line(
        "waypoint CPU per request",
        format!("{:.1} µs", wp.cpu_us),
        wp.cpu_us / TARGET_CPU_US,
        "≤ 1.00× of 20 µs",
        Some(wp.cpu_us <= TARGET_CPU_US),
    );
    line(
        "  waypoint CPU vs Envoy-HBONE (same footing)",
        format!("{:.1} µs", hbone.cpu_us),
        wp.cpu_us / hbone.cpu_us,
        "(context)",
        None,
    );
    line(
        "  waypoint CPU vs Envoy-plain (no TLS, no h2)",
        format!("{:.1} µs", plain.cpu_us),
        wp.cpu_us / plain.cpu_us,
        "(context)",
        None,
    );
    line(
        "waypoint p99 vs Envoy-HBONE p99 (same footing)",
        format!("{:.3} ms", wp.p99),
        wp.p99 / hbone.p99,
        "≤ 0.50×",
        Some(wp.p99 <= TARGET_P99_VS_ENVOY * hbone.p99),
    );
    line(
        "waypoint p99 vs Envoy-plain p99",
        format!("{:.3} ms", plain.p99),
        wp.p99 / plain.p99,
        "≤ 0.50×",
        Some(wp.p99 <= TARGET_P99_VS_ENVOY * plain.p99),
    );
    // What each proxy adds to the HBONE hop it contains (both have that hop to the backend).
    let (wp_added, envoy_added) = (wp.p50 - hop.p50, hbone.p50 - hop.p50);
    line(
        "  p50 added to the HBONE hop: waypoint (ratio vs Envoy-HBONE's)",
        format!("{wp_added:.3} ms"),
        if envoy_added > 0.0 {
            wp_added / envoy_added
        } else {
            f64::NAN
        },
        "(context)",
        None,
    );
    let compile = median(&mut input.compile_ms.to_vec());
    let worst = input.compile_ms.iter().copied().fold(0.0, f64::max);
    line(
        &format!(
            "RouteTable::compile, {} routes (median of {})",
            input.route_count,
            input.compile_ms.len()
        ),
        format!("{compile:.1} ms"),
        compile / TARGET_REBUILD_MS,
        "≤ 1.00× of 100 ms",
        Some(compile <= TARGET_REBUILD_MS),
    );
    line(
        "  worst of those compiles",
        format!("{worst:.1} ms"),
        worst / TARGET_REBUILD_MS,
        "(context)",
        None,
    );
    let live = |v: Option<f64>, e: &Option<String>| match (v, e) {
        (Some(ms), _) => format!("{ms:.1} ms"),
        (None, Some(_)) => "not seen".to_string(),
        (None, None) => "?".to_string(),
    };
    let _ = writeln!(
        out,
        "{:<52} {:>12} (10 000 routes in), {} (back to 20), from the waypoint's log",
        "  live compile in the waypoint process",
        live(input.live_in, &input.big_error),
        live(input.live_out, &input.small_error),
    );
    let swap_failed = input.swap.get("failed").copied().unwrap_or(f64::NAN);
    let swap_requests = input.swap.get("requests").copied().unwrap_or(f64::NAN);
    let swapped = input.live_in.is_some() && input.live_out.is_some();
    let _ = writeln!(
        out,
        "{:<52} {:>12} of {swap_requests} requests at {} req/s (p99 {:.3} ms)  target 0 {}",
        "requests failed during the live swaps",
        swap_failed,
        super::RATE,
        input.swap.get("p99_us").copied().unwrap_or(f64::NAN) / 1e3,
        verdict(swap_failed == 0.0 && swapped),
    );
    for (what, error) in [
        ("swap in", &input.big_error),
        ("swap out", &input.small_error),
    ] {
        if let Some(error) = error {
            // The harness appends the log's tail: thousands of access lines.
            let short: String = error.chars().take(300).collect();
            let _ = writeln!(out, "  {what}: {short}");
        }
    }
    if let Some(error) = &input.swap_error {
        let _ = writeln!(out, "  first failure during the swap: {error}");
    }
    let _ = writeln!(
        out,
        "\nwaypoint access lines show rule 15 taken: {}; setup {:.1} s, measured load {:.1} s",
        input.routed,
        input.setup.as_secs_f64(),
        input.load_time.as_secs_f64()
    );
    out
}
