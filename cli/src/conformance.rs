//! `trellisctl conformance`: runs the Gateway API conformance tests against a
//! sandbox — the mesh profiles MESH-HTTP and MESH-GRPC, or with `--profile
//! GATEWAY-HTTP` the gateway profile — and writes the upstream
//! `ConformanceReport`.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::ExitCode;
use trellis_sandbox::conformance::{self, Profile, RunOptions, report};

/// Run the Gateway API conformance suite in a sandbox (needs root).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// MESH (MESH-HTTP and MESH-GRPC) or GATEWAY-HTTP.
    #[arg(long, default_value = "MESH", value_parser = ["MESH", "MESH-HTTP", "MESH-GRPC", "GATEWAY-HTTP"])]
    profile: String,
    /// The sandbox to use (made for the run, removed afterwards).
    #[arg(long, default_value = "conformance")]
    name: String,
    /// Run only these tests (repeatable), e.g. `--test MeshBasic`.
    #[arg(long = "test")]
    tests: Vec<String>,
    /// Where to write the ConformanceReport YAML.
    #[arg(long, default_value = "trellis-conformance-report.yaml")]
    report: PathBuf,
    /// The repository root holding `third_party/gateway-api`.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Where the Trellis binaries are (default: next to trellisctl).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Leave the sandbox up afterwards.
    #[arg(long)]
    keep: bool,
}

/// The repository root: given, else the one this binary was built from, else
/// the current directory.
fn root(given: Option<PathBuf>) -> Result<PathBuf> {
    let candidates = given.into_iter().chain([
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
        std::env::current_dir().unwrap_or_default(),
    ]);
    for c in candidates {
        if c.join("third_party/gateway-api/conformance").is_dir() {
            return Ok(c);
        }
    }
    bail!(
        "cannot find third_party/gateway-api/conformance: pass --root with the Trellis repository"
    )
}

pub fn run(args: Args) -> Result<ExitCode> {
    let opts = RunOptions {
        sandbox: args.name,
        bin_dir: args.bin_dir,
        only: args.tests,
        keep: args.keep,
        root: root(args.root)?,
        profile: if args.profile == "GATEWAY-HTTP" {
            Profile::GatewayHttp
        } else {
            Profile::Mesh
        },
    };
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let outcomes = rt.block_on(conformance::run(&opts, &|line: &str| eprintln!("{line}")))?;
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    let report = report::build_profiles(opts.profile.report_profiles(), &outcomes, &version, &date);
    let yaml = serde_saphyr::to_string(&report).context("rendering the report")?;
    std::fs::write(&args.report, &yaml)
        .with_context(|| format!("writing {}", args.report.display()))?;
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o.result, report::TestResult::Failed(_)))
        .count();
    println!(
        "conformance: {} tests passed and {failed} failed",
        outcomes.len() - failed
    );
    println!("report: {}", args.report.display());
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
