//! Installing, removing and checking a plan in the current network namespace.
//!
//! Every change is one transaction of the kernel: one `iptables-restore
//! --noflush` per IP family (or one `nft -f` for both), so a pod never sees
//! half its rules. Only our chains and the jumps into them are touched; other
//! rules in the namespace stay as they are.
//!
//! The caller chooses the namespace: the process (or thread, see
//! [`crate::netns::run_in`]) is already in it, and the tools run as its
//! children.

use crate::config::{Families, Family};
use crate::plan::{Chain, Plan};
use crate::render::{self, NFT_TABLE};
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// How rules reach the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `iptables-restore` / `ip6tables-restore` (the `-nft` variants when
    /// installed), so `iptables-save` shows the rules. The default.
    #[default]
    Iptables,
    /// One `nft -f` ruleset in a table of our own (`inet trellis`).
    Nft,
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "iptables" => Ok(Backend::Iptables),
            "nft" | "nftables" => Ok(Backend::Nft),
            other => Err(format!(
                "unknown capture backend {other:?}: expected \"iptables\" or \"nft\""
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{tool} not found in PATH, /usr/sbin or /sbin: install the {package} package")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },
    #[error("running {tool}: {source}")]
    Spawn {
        tool: String,
        source: std::io::Error,
    },
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        tool: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error(
        "capture rules differ from the plan in {place}: expected {expected:?}, found {found:?}"
    )]
    Mismatch {
        place: String,
        expected: Vec<String>,
        found: Vec<String>,
    },
}

/// Installs the plan, replacing any earlier capture rules of ours.
/// Applying the same plan twice leaves the same rules.
pub fn apply(plan: &Plan, backend: Backend) -> Result<(), ApplyError> {
    match backend {
        Backend::Iptables => {
            for family in plan.families.iter() {
                let tools = IptablesTools::find(family)?;
                let state = SavedNat::parse(&tools.save()?);
                let deletions: Vec<String> = state.jumps.iter().map(|j| delete(j)).collect();
                tools.restore(&render::iptables_restore(plan, family, &deletions))?;
            }
            Ok(())
        }
        Backend::Nft => nft(&plan.nft_ruleset()),
    }
}

/// Removes our capture rules from the given families; nothing to remove is
/// not an error.
pub fn remove(families: Families, backend: Backend) -> Result<(), ApplyError> {
    match backend {
        Backend::Iptables => {
            for family in families.iter() {
                let tools = IptablesTools::find(family)?;
                let state = SavedNat::parse(&tools.save()?);
                if state.chains.is_empty() && state.jumps.is_empty() {
                    continue;
                }
                let mut input = String::from("*nat\n");
                for jump in &state.jumps {
                    input.push_str(&delete(jump));
                    input.push('\n');
                }
                // Flush every chain before deleting any: they jump to each other.
                for op in ["-F", "-X"] {
                    for chain in &state.chains {
                        input.push_str(&format!("{op} {chain}\n"));
                    }
                }
                input.push_str("COMMIT\n");
                tools.restore(&input)?;
            }
            Ok(())
        }
        Backend::Nft => nft(&render::nft_delete_tables()),
    }
}

/// Verifies the installed rules are exactly the plan's.
pub fn check(plan: &Plan, backend: Backend) -> Result<(), ApplyError> {
    match backend {
        Backend::Iptables => {
            for family in plan.families.iter() {
                let tools = IptablesTools::find(family)?;
                let found = SavedNat::parse(&tools.save()?);
                let expected = plan.iptables_rules(family);
                for chain in Chain::ALL {
                    let ours = |lines: &[String]| -> Vec<String> {
                        lines
                            .iter()
                            .filter(|l| chain_of(l) == Some(chain.name()))
                            .cloned()
                            .collect()
                    };
                    let want = ours(&expected);
                    let have = ours(&found.rules());
                    let declared =
                        chain.is_builtin() || found.chains.iter().any(|c| c == chain.name());
                    if want != have || !declared {
                        return Err(ApplyError::Mismatch {
                            place: format!("{family} chain {}", chain.name()),
                            expected: want,
                            found: have,
                        });
                    }
                }
            }
            Ok(())
        }
        Backend::Nft => {
            let family = plan.nft_family();
            let nft_path = find_tool(&["nft"], "nft", "nftables")?;
            let out = Command::new(&nft_path)
                .args(["list", "table", family, NFT_TABLE])
                .output()
                .map_err(|source| ApplyError::Spawn {
                    tool: "nft".into(),
                    source,
                })?;
            let lines = |text: &str| -> Vec<String> {
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect()
            };
            let expected = lines(&plan.nft_table());
            let found = if out.status.success() {
                lines(&String::from_utf8_lossy(&out.stdout))
            } else {
                Vec::new()
            };
            if expected != found {
                return Err(ApplyError::Mismatch {
                    place: format!("nft table {family} {NFT_TABLE}"),
                    expected,
                    found,
                });
            }
            Ok(())
        }
    }
}

/// What `iptables-save -t nat` shows of ours.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SavedNat {
    /// Our chains that exist.
    pub chains: Vec<String>,
    /// Rules in other chains that jump into ours, as saved (`-A ...`).
    pub jumps: Vec<String>,
    /// The rules of our chains, as saved.
    pub own: Vec<String>,
}

impl SavedNat {
    pub fn parse(save: &str) -> Self {
        let own = |name: &str| Chain::OWN.iter().any(|c| c.name() == name);
        let mut state = SavedNat::default();
        let mut in_nat = false;
        for line in save.lines().map(str::trim_end) {
            if let Some(table) = line.strip_prefix('*') {
                in_nat = table == "nat";
            } else if !in_nat {
                continue;
            } else if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or_default();
                if own(name) {
                    state.chains.push(name.to_string());
                }
            } else if let Some(chain) = chain_of(line) {
                if own(chain) {
                    state.own.push(line.to_string());
                } else if target_of(line).is_some_and(own) {
                    state.jumps.push(line.to_string());
                }
            }
        }
        state
    }

    /// The jumps then our chains' rules, the way the plan lists them.
    fn rules(&self) -> Vec<String> {
        self.jumps.iter().chain(&self.own).cloned().collect()
    }
}

fn chain_of(line: &str) -> Option<&str> {
    line.strip_prefix("-A ")?.split_whitespace().next()
}

fn target_of(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "-j")?;
    words.next()
}

/// The `-D` form of a saved `-A` rule.
fn delete(saved: &str) -> String {
    format!("-D {}", saved.strip_prefix("-A ").unwrap_or(saved))
}

/// The save/restore pair of one family, from the same iptables variant.
struct IptablesTools {
    save: PathBuf,
    restore: PathBuf,
}

impl IptablesTools {
    fn find(family: Family) -> Result<Self, ApplyError> {
        let (nft, plain, nft_save, plain_save, restore_name, save_name) = match family {
            Family::V4 => (
                "iptables-nft-restore",
                "iptables-restore",
                "iptables-nft-save",
                "iptables-save",
                "iptables-restore",
                "iptables-save",
            ),
            Family::V6 => (
                "ip6tables-nft-restore",
                "ip6tables-restore",
                "ip6tables-nft-save",
                "ip6tables-save",
                "ip6tables-restore",
                "ip6tables-save",
            ),
        };
        // Prefer the nf_tables variant; fall back to whatever is installed
        // under the plain name, keeping save and restore of one variant.
        if let (Ok(restore), Ok(save)) = (
            find_tool(&[nft], restore_name, "iptables"),
            find_tool(&[nft_save], save_name, "iptables"),
        ) {
            return Ok(Self { save, restore });
        }
        Ok(Self {
            restore: find_tool(&[plain], restore_name, "iptables")?,
            save: find_tool(&[plain_save], save_name, "iptables")?,
        })
    }

    fn save(&self) -> Result<String, ApplyError> {
        let tool = self.save.display().to_string();
        let out = Command::new(&self.save)
            .args(["-t", "nat"])
            .output()
            .map_err(|source| ApplyError::Spawn {
                tool: tool.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(ApplyError::Failed {
                tool,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn restore(&self, input: &str) -> Result<(), ApplyError> {
        run_with_input(&self.restore, &["--noflush"], input)
    }
}

fn nft(input: &str) -> Result<(), ApplyError> {
    let nft = find_tool(&["nft"], "nft", "nftables")?;
    run_with_input(&nft, &["-f", "-"], input)
}

fn run_with_input(tool: &Path, args: &[&str], input: &str) -> Result<(), ApplyError> {
    let name = tool.display().to_string();
    let spawn_err = |source| ApplyError::Spawn {
        tool: name.clone(),
        source,
    };
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        return Err(ApplyError::Failed {
            tool: name,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Finds the first of `names` in `PATH`, then in the sbin directories a
/// runtime's minimal `PATH` may lack.
fn find_tool(
    names: &[&str],
    tool: &'static str,
    package: &'static str,
) -> Result<PathBuf, ApplyError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .collect();
    names
        .iter()
        .flat_map(|name| dirs.iter().map(move |d| d.join(name)))
        .find(|p| p.is_file())
        .ok_or(ApplyError::ToolMissing { tool, package })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
-A INPUT -j TRELLIS_INBOUND
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:TRELLIS_INBOUND - [0:0]
:OTHER - [0:0]
-A PREROUTING -p tcp -j TRELLIS_INBOUND
-A PREROUTING -p udp -j OTHER
-A OUTPUT -p tcp -m tcp --dport 53 -j TRELLIS_OUTPUT
-A TRELLIS_INBOUND -p tcp -m tcp --dport 15106 -j RETURN
-A OTHER -j RETURN
COMMIT
";

    #[test]
    fn saved_nat_finds_only_our_chains_and_jumps() {
        assert_eq!(
            SavedNat::parse(SAVED),
            SavedNat {
                chains: vec!["TRELLIS_INBOUND".into()],
                jumps: vec![
                    "-A PREROUTING -p tcp -j TRELLIS_INBOUND".into(),
                    "-A OUTPUT -p tcp -m tcp --dport 53 -j TRELLIS_OUTPUT".into(),
                ],
                own: vec!["-A TRELLIS_INBOUND -p tcp -m tcp --dport 15106 -j RETURN".into()],
            }
        );
    }

    #[test]
    fn deletions_mirror_saved_rules() {
        assert_eq!(
            delete("-A PREROUTING -p tcp -j TRELLIS_INBOUND"),
            "-D PREROUTING -p tcp -j TRELLIS_INBOUND"
        );
    }

    #[test]
    fn backends_parse_by_name() {
        assert_eq!("nft".parse(), Ok(Backend::Nft));
        assert_eq!("iptables".parse(), Ok(Backend::Iptables));
        assert!(
            "ebtables"
                .parse::<Backend>()
                .unwrap_err()
                .contains("ebtables")
        );
    }
}
