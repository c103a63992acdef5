//! The result of a run: per test pass/fail with the first failure, per feature pass counts (a
//! test counts for every feature in its `features` list, as FEATURES.md counts them), totals,
//! and the stricter checks upstream does not make, listed apart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One case of a test.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseResult {
    pub label: String,
    pub passed: bool,
    /// Why it failed (the last failure seen before the deadline).
    pub reason: Option<String>,
    /// Failures of the stricter checks (never change `passed`).
    pub strict: Vec<String>,
    /// Requests (or sampling rounds) sent.
    pub attempts: u32,
}

/// One case file.
#[derive(Debug, Clone, PartialEq)]
pub struct TestResult {
    pub name: String,
    pub features: Vec<String>,
    pub profiles: Vec<String>,
    pub provisional: bool,
    /// The test could not be set up (its manifests did not apply): its cases did not run and
    /// are listed as failed.
    pub setup_error: Option<String>,
    pub cases: Vec<CaseResult>,
}

impl TestResult {
    pub fn passed(&self) -> bool {
        self.setup_error.is_none() && self.cases.iter().all(|c| c.passed)
    }

    /// `case: reason` of the first failure, or the setup error.
    pub fn first_failure(&self) -> Option<String> {
        if let Some(error) = &self.setup_error {
            return Some(format!("setup: {error}"));
        }
        self.cases
            .iter()
            .find(|c| !c.passed)
            .map(|c| format!("{}: {}", c.label, c.reason.as_deref().unwrap_or("failed")))
    }

    pub fn cases_passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed).count()
    }
}

/// Pass counts for one feature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub tests_passed: usize,
    pub tests: usize,
    pub cases_passed: usize,
    pub cases: usize,
}

impl Counts {
    fn add(&mut self, test: &TestResult) {
        self.tests += 1;
        self.tests_passed += usize::from(test.passed());
        self.cases += test.cases.len();
        self.cases_passed += test.cases_passed();
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub tests: Vec<TestResult>,
}

impl Report {
    pub fn totals(&self) -> Counts {
        let mut counts = Counts::default();
        self.tests.iter().for_each(|t| counts.add(t));
        counts
    }

    pub fn by_feature(&self) -> BTreeMap<String, Counts> {
        let mut features: BTreeMap<String, Counts> = BTreeMap::new();
        for test in &self.tests {
            for feature in &test.features {
                features.entry(feature.clone()).or_default().add(test);
            }
        }
        features
    }

    /// Tests reported under `profile` (their `profiles` list names it).
    pub fn in_profile<'a>(&'a self, profile: &'a str) -> impl Iterator<Item = &'a TestResult> + 'a {
        self.tests
            .iter()
            .filter(move |t| t.profiles.iter().any(|p| p == profile))
    }

    /// `Test: case: reason` for every failed test of any of `profiles`.
    pub fn failures_in(&self, profiles: &[&str]) -> Vec<String> {
        self.tests
            .iter()
            .filter(|t| t.profiles.iter().any(|p| profiles.contains(&p.as_str())))
            .filter_map(|t| t.first_failure().map(|f| format!("{}: {f}", t.name)))
            .collect()
    }

    /// The whole report as text (what the conformance test prints to stderr).
    pub fn render(&self) -> String {
        let mut out = String::from("== mesh conformance (Gateway API v1.6.1, GAMMA) ==\n");
        for test in &self.tests {
            let verdict = if test.passed() { "PASS" } else { "FAIL" };
            let _ = writeln!(
                out,
                "{verdict} {:<44} {}/{} cases{}{}",
                test.name,
                test.cases_passed(),
                test.cases.len(),
                if test.provisional {
                    " (provisional)"
                } else {
                    ""
                },
                test.first_failure()
                    .map(|f| format!(" — {f}"))
                    .unwrap_or_default()
            );
        }
        out.push_str("-- per feature (tests passed/total, cases passed/total) --\n");
        for (feature, counts) in self.by_feature() {
            let _ = writeln!(
                out,
                "{feature:<48} {}/{} tests  {}/{} cases",
                counts.tests_passed, counts.tests, counts.cases_passed, counts.cases
            );
        }
        for profile in ["MESH-HTTP", "MESH-GRPC"] {
            let tests: Vec<&TestResult> = self.in_profile(profile).collect();
            let passed = tests.iter().filter(|t| t.passed()).count();
            let _ = writeln!(out, "profile {profile}: {passed}/{} tests", tests.len());
        }
        let totals = self.totals();
        let _ = writeln!(
            out,
            "total: {}/{} tests, {}/{} cases",
            totals.tests_passed, totals.tests, totals.cases_passed, totals.cases
        );
        let strict: Vec<String> = self
            .tests
            .iter()
            .flat_map(|t| {
                t.cases.iter().flat_map(move |c| {
                    c.strict
                        .iter()
                        .map(move |s| format!("{} / {}: {s}", t.name, c.label))
                })
            })
            .collect();
        if !strict.is_empty() {
            out.push_str("-- stricter checks upstream does not make (not counted above) --\n");
            for line in strict {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}
