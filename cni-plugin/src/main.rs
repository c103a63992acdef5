//! `ambit-cni`: chained CNI plugin that hands ambient pods to ztunnel and
//! installs their capture rules (DESIGN §3). See `cni` for the config keys
//! and `plugin` for what each command does; `install` is the node installer
//! (`ambit-cni install …`, run by the DaemonSet).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::ExitCode;

mod install;
mod logging;
mod plugin;

use ambit_cni::cni::{self, code, CniError, Request};

fn main() -> ExitCode {
    // Runtimes run a plugin without arguments and with CNI_COMMAND set;
    // anything else is a person or the DaemonSet calling the installer.
    if std::env::args_os().len() > 1 && std::env::var_os("CNI_COMMAND").is_none() {
        return install::main(std::env::args_os());
    }
    let env = match cni_env() {
        Ok(env) => env,
        Err(error) => return fail(&error, cni::LATEST_VERSION),
    };
    // VERSION may be run by hand, without anything on stdin; don't wait.
    let mut stdin = Vec::new();
    if env.get("CNI_COMMAND").map(String::as_str) != Some("VERSION") {
        if let Err(error) = std::io::stdin().read_to_end(&mut stdin) {
            let error = CniError::new(
                code::IO_FAILURE,
                format!("cannot read the network config from stdin: {error}"),
                "",
            );
            return fail(&error, cni::LATEST_VERSION);
        }
    }
    let version = cni::version_for_errors(&stdin);
    let result = cni::parse(&env, &stdin).and_then(|request| {
        if let Some(config) = config_of(&request) {
            logging::init(config);
        }
        let span = tracing::info_span!(
            "cni",
            command = env.get("CNI_COMMAND").map(String::as_str),
            container = env.get("CNI_CONTAINERID").map(String::as_str)
        );
        let _entered = span.enter();
        plugin::run(request).inspect_err(|error| tracing::error!(%error, "CNI call failed"))
    });
    match result {
        Ok(output) => {
            if let Some(output) = output {
                let mut stdout = std::io::stdout().lock();
                if writeln!(stdout, "{output}")
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error, &version),
    }
}

fn config_of(request: &Request) -> Option<&cni::NetConf> {
    match request {
        Request::Version => None,
        Request::Add(call) | Request::Del(call) | Request::Check(call) => Some(&call.config),
        Request::Status(config) | Request::Gc(config) => Some(config),
    }
}

/// The `CNI_*` variables; one that is not UTF-8 is an error naming it.
fn cni_env() -> Result<HashMap<String, String>, CniError> {
    let mut env = HashMap::new();
    for (key, value) in std::env::vars_os() {
        let Some(key) = key.to_str().filter(|k| k.starts_with("CNI_")) else {
            continue;
        };
        let value = value.into_string().map_err(|_| {
            CniError::new(code::INVALID_ENV, format!("{key} is not valid UTF-8"), "")
        })?;
        env.insert(key.to_owned(), value);
    }
    Ok(env)
}

/// Prints the error JSON on stdout and exits non-zero, as the spec asks.
fn fail(error: &CniError, version: &str) -> ExitCode {
    let _ = writeln!(std::io::stdout().lock(), "{}", error.to_json(version));
    ExitCode::FAILURE
}
