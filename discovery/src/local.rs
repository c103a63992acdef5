//! The local source: `--manifests` files and folders, reloaded live.
//!
//! Change detection is polling by content hash rather than filesystem events: it behaves the
//! same for editors that write a temp file and rename it, for Kubernetes ConfigMap volumes that
//! swap a `..data` symlink, and on filesystems without inotify, and for a few small files it
//! costs next to nothing. A snapshot is published only when the content changed and every
//! document loaded; otherwise the last good snapshot stays in force and the problem is logged and
//! kept for the admin endpoint ([`LocalSource::last_error`]).
//!
//! The exception is an AuthorizationPolicy that cannot be understood: keeping the last snapshot
//! would freeze every other edit behind one typo, and keeping the policy's last good form would
//! enforce what the operator just changed. The rest loads and the policy is enforced in its
//! fail-closed form ([`crate::policy`]), logged once and listed by [`LocalSource::problems`].

use std::collections::BTreeSet;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::decode::{Collector, Loaded};
use crate::error::{ManifestError, ManifestErrors};
use crate::snapshot::{Snapshot, SnapshotOptions};

/// How often the files are checked when nothing says otherwise.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// File extensions read from a folder; a path named directly is read whatever its extension.
const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// What to read and how.
#[derive(Debug, Clone)]
pub struct LocalSourceConfig {
    /// Files, or folders whose `*.yaml`, `*.yml` and `*.json` files are read in name order
    /// (not recursively; hidden files such as editor swap files and ConfigMap `..data` are
    /// skipped).
    pub paths: Vec<PathBuf>,
    /// How often to look for changes; default [`DEFAULT_POLL_INTERVAL`].
    pub poll_interval: Duration,
    pub snapshot: SnapshotOptions,
}

impl LocalSourceConfig {
    pub fn new(paths: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        LocalSourceConfig {
            paths: paths.into_iter().map(Into::into).collect(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            snapshot: SnapshotOptions::default(),
        }
    }
}

/// What one [`LocalSource::poll`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// The content is what was last published or rejected.
    Unchanged,
    /// A new snapshot with this generation was published.
    Published(u64),
    /// The content does not load; seen once, so it may be a file caught mid-write. Reported on
    /// the next poll if it is still the same.
    Pending,
    /// The content does not load and was reported; the last good snapshot stays in force.
    Rejected,
}

#[derive(Debug, Default)]
struct PollState {
    /// Fingerprint of the content behind the current snapshot.
    published: u64,
    /// Fingerprint last dealt with (published or reported), to skip unchanged content.
    settled: u64,
    /// Fingerprint of content that failed once and awaits confirmation.
    pending_failure: Option<u64>,
    generation: u64,
    last_error: Option<Arc<ManifestErrors>>,
    /// Non-blocking problems of the content in force (policies enforced fail-closed).
    problems: Option<Arc<ManifestErrors>>,
    /// Those problems as logged, so one is logged once, not again with every unrelated edit.
    logged: BTreeSet<String>,
}

/// Manifest files as a source of snapshots.
#[derive(Debug)]
pub struct LocalSource {
    config: LocalSourceConfig,
    sender: watch::Sender<Arc<Snapshot>>,
    state: Mutex<PollState>,
    /// One poll at a time (the poller's and [`Source::refresh`](crate::Source::refresh)'s), so an
    /// older read can never be published after a newer one.
    polling: Mutex<()>,
}

impl LocalSource {
    /// Reads and checks the manifests once. Errors here mean the binary should not start: they
    /// say which file, document and field to fix.
    pub fn load(config: LocalSourceConfig) -> Result<Arc<Self>, ManifestErrors> {
        let contents = read_manifests(&config.paths);
        let Loaded { snapshot, problems } = build(&contents, &config.snapshot)?;
        let snapshot = snapshot.with_generation(1);
        let mut logged = BTreeSet::new();
        report_problems(&problems, &mut logged);
        tracing::info!(
            files = contents.files.len(),
            workloads = snapshot.workloads().count(),
            services = snapshot.services().count(),
            "manifests loaded"
        );
        let (sender, _) = watch::channel(Arc::new(snapshot));
        Ok(Arc::new(LocalSource {
            config,
            sender,
            polling: Mutex::new(()),
            state: Mutex::new(PollState {
                published: contents.fingerprint,
                settled: contents.fingerprint,
                pending_failure: None,
                generation: 1,
                last_error: None,
                problems: ManifestErrors::new(problems).map(Arc::new),
                logged,
            }),
        }))
    }

    /// A receiver that always holds the newest snapshot and wakes on each new one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.sender.subscribe()
    }

    /// The snapshot in force.
    pub fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&self.sender.borrow())
    }

    /// Why the manifests on disk are not in force, if they are not: for the admin endpoint.
    pub fn last_error(&self) -> Option<Arc<ManifestErrors>> {
        self.lock().last_error.clone()
    }

    /// Problems of the manifests in force that did not stop them loading: AuthorizationPolicies
    /// that could not be understood, each enforced in its fail-closed form (or left out if it
    /// cannot change access), and rejected Gateway API objects. For the admin endpoint; the
    /// snapshot has the objects themselves ([`Snapshot::invalid_policies`],
    /// [`crate::GatewayApiView::rejected`]).
    pub fn problems(&self) -> Option<Arc<ManifestErrors>> {
        self.lock().problems.clone()
    }

    pub fn config(&self) -> &LocalSourceConfig {
        &self.config
    }

    /// Checks the files once and publishes a new snapshot if their content changed and loads.
    /// Blocking (reads files); [`LocalSource::run`] calls it off the async workers.
    pub fn poll(&self) -> PollOutcome {
        let _one_at_a_time = self.polling.lock().unwrap_or_else(PoisonError::into_inner);
        let contents = read_manifests(&self.config.paths);
        let fingerprint = contents.fingerprint;
        {
            let mut state = self.lock();
            if fingerprint == state.settled {
                return PollOutcome::Unchanged;
            }
            if fingerprint == state.published {
                // A broken edit was reverted: the snapshot in force is right again.
                state.settled = fingerprint;
                state.pending_failure = None;
                state.last_error = None;
                tracing::info!(generation = state.generation, "manifests valid again");
                return PollOutcome::Unchanged;
            }
        }
        let result = build(&contents, &self.config.snapshot);
        let mut state = self.lock();
        match result {
            // A broken policy may be a file caught mid-write too: wait for the same content a
            // second time before enforcing it fail-closed (the last snapshot stays meanwhile).
            Ok(Loaded { problems, .. })
                if !problems.is_empty() && state.pending_failure != Some(fingerprint) =>
            {
                state.pending_failure = Some(fingerprint);
                PollOutcome::Pending
            }
            Ok(Loaded { snapshot, problems }) => {
                report_problems(&problems, &mut state.logged);
                state.problems = ManifestErrors::new(problems).map(Arc::new);
                state.generation += 1;
                let generation = state.generation;
                tracing::info!(
                    generation,
                    files = contents.files.len(),
                    workloads = snapshot.workloads().count(),
                    services = snapshot.services().count(),
                    "manifests reloaded"
                );
                self.sender
                    .send_replace(Arc::new(snapshot.with_generation(generation)));
                state.published = fingerprint;
                state.settled = fingerprint;
                state.pending_failure = None;
                state.last_error = None;
                PollOutcome::Published(generation)
            }
            Err(errors) if state.pending_failure == Some(fingerprint) => {
                report(&errors, state.generation);
                state.settled = fingerprint;
                state.pending_failure = None;
                state.last_error = Some(Arc::new(errors));
                PollOutcome::Rejected
            }
            Err(_) => {
                state.pending_failure = Some(fingerprint);
                PollOutcome::Pending
            }
        }
    }

    /// Polls forever at the configured interval. Spawn it (see [`LocalSource::spawn`]) and
    /// abort the task to stop.
    pub async fn run(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.config.poll_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let source = Arc::clone(&self);
            if let Err(err) = tokio::task::spawn_blocking(move || source.poll()).await {
                tracing::warn!(error = %err, "manifest poll did not complete; retrying at the next interval");
            }
        }
    }

    /// Starts [`LocalSource::run`] on the current tokio runtime.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(Arc::clone(self).run())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PollState> {
        // The state is plain data updated in single steps; a panic elsewhere cannot leave it
        // half-written, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Logs the non-blocking problems of content about to be in force, each once: `logged` holds
/// what was logged before and is replaced by the current set, so a problem fixed and made again
/// is logged again.
fn report_problems(problems: &[ManifestError], logged: &mut BTreeSet<String>) {
    let current: BTreeSet<String> = problems.iter().map(ToString::to_string).collect();
    for error in problems {
        let message = error.to_string();
        if logged.contains(&message) {
            continue;
        }
        let (file, document) = error.origin();
        let field = error.field().unwrap_or("");
        if matches!(error, ManifestError::Rejected { .. }) {
            tracing::warn!(
                file = %file.display(),
                document,
                field,
                error = %message,
                "Gateway API object does not follow the schema; it is kept as rejected (not accepted, never served) until fixed, the rest of the manifests loaded"
            );
        } else {
            tracing::warn!(
                file = %file.display(),
                document,
                field,
                error = %message,
                "AuthorizationPolicy could not be understood; it is enforced in its fail-closed form until fixed, the rest of the manifests loaded"
            );
        }
    }
    *logged = current;
}

fn report(errors: &ManifestErrors, generation: u64) {
    for error in errors.errors() {
        let (file, document) = error.origin();
        tracing::warn!(
            file = %file.display(),
            document,
            field = error.field().unwrap_or(""),
            error = %error,
            kept_generation = generation,
            "manifests rejected; the last good snapshot stays in force"
        );
    }
}

/// The manifest files as read in one pass.
struct Contents {
    /// In reading order; a file that could not be read carries its error.
    files: Vec<(PathBuf, io::Result<String>)>,
    fingerprint: u64,
}

fn read_manifests(paths: &[PathBuf]) -> Contents {
    let mut files = Vec::new();
    for path in paths {
        match manifest_files(path) {
            Ok(found) => files.extend(found.into_iter().map(|file| {
                let text = fs::read_to_string(&file);
                (file, text)
            })),
            Err(err) => files.push((path.clone(), Err(err))),
        }
    }
    // DefaultHasher::new() uses fixed keys, so equal content always hashes equal.
    let mut hasher = DefaultHasher::new();
    for (path, text) in &files {
        path.hash(&mut hasher);
        match text {
            Ok(text) => text.hash(&mut hasher),
            Err(err) => err.to_string().hash(&mut hasher),
        }
    }
    Contents {
        fingerprint: hasher.finish(),
        files,
    }
}

/// The files a `--manifests` path stands for.
fn manifest_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    // `metadata` follows symlinks, so a symlinked folder or file counts as what it points to.
    if !fs::metadata(path)?.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut found = Vec::new();
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Hidden: editor swap files (.x.yaml.swp), ConfigMap internals (..data, ..2024_...).
        if name.starts_with('.') {
            continue;
        }
        let wanted = Path::new(&*name)
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| MANIFEST_EXTENSIONS.contains(&ext));
        // A dangling symlink (mid-swap) is skipped, not an error: the next poll sees the swap.
        if wanted && fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

fn build(contents: &Contents, options: &SnapshotOptions) -> Result<Loaded, ManifestErrors> {
    let mut collector = Collector::new(options);
    for (path, text) in &contents.files {
        match text {
            Ok(text) => collector.add_file(path, text),
            Err(err) => collector.read_error(path, io::Error::new(err.kind(), err.to_string())),
        }
    }
    collector.finish(options)
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
