//! `validate`, `plan` and `graph`: read a file, change nothing.

use std::path::Path;

use lightcone::parse::units;
use lightcone::plan;
use lightcone::topology;

use super::{invalid, invalid_rendered, load, Failure};
use crate::GraphFormat;

/// `lightcone validate FILE`: a topology or a scenario, every check `run` makes.
pub(crate) fn cmd_validate(file: &Path) -> Result<(), Failure> {
    use lightcone::experiment::validate::{self, CheckedFile};
    let describe = |t: &topology::Topology| {
        format!(
            "lab {}, {} nodes, {} links, time_scale {}, seed {}",
            t.name,
            t.nodes.len(),
            t.links.len(),
            t.time_scale,
            t.seed
        )
    };
    match validate::check_file(file).map_err(invalid_rendered)? {
        CheckedFile::Topology(t) => {
            println!("{}: ok — {}", file.display(), describe(&t))
        }
        CheckedFile::Scenario(c) => {
            eprint!("{}", c.warnings);
            println!(
            "{}: ok — scenario {}, seed {}, duration {}, {} steps ({} actions), {} expectations; its topology: {}",
            file.display(),
            c.scenario.name,
            c.scenario.seed,
            units::fmt_ns(c.scenario.duration_ns),
            c.scenario.timeline.len(),
            c.plan.len(),
            c.scenario.expect.len(),
            describe(&c.topology)
            )
        }
    }
    Ok(())
}

/// `lightcone plan FILE [--hosts HOSTS [--slice HOST]]`.
pub(crate) fn cmd_plan(
    file: &Path,
    hosts: Option<&Path>,
    slice: Option<&str>,
) -> Result<(), Failure> {
    let p = plan::plan(&load(file)?);
    let Some(hosts_file) = hosts else {
        print!("{}", p.render());
        return Ok(());
    };
    let h = lightcone::hosts::load(hosts_file).map_err(|e| match e {
        topology::LoadError::Invalid { rendered, .. } => {
            super::Failure(super::code::INVALID, super::Rendered(rendered).into())
        }
        e => invalid(e),
    })?;
    let placed = lightcone::hosts::placement::place(&p, &h).map_err(|e| {
        invalid(anyhow::anyhow!(
            "{} cannot be placed on the hosts of {}: {e}; nothing was changed",
            file.display(),
            hosts_file.display()
        ))
    })?;
    match slice {
        None => print!("{}", placed.render(&p, &h)),
        Some(name) => {
            let Some(host) = h.host_index(name) else {
                let names: Vec<&str> = h.hosts.iter().map(|x| x.name.as_str()).collect();
                return Err(invalid(anyhow::anyhow!(
                    "--slice {name:?}: no such host in {} (hosts: {})",
                    hosts_file.display(),
                    names.join(", ")
                )));
            };
            let s = lightcone::hosts::slice::Slice::of(&p, &h, &placed, host)
                .map_err(super::Failure::from)?;
            println!(
                "{}",
                serde_json::to_string(&s).map_err(super::Failure::from)?
            );
        }
    }
    Ok(())
}

/// `lightcone graph FILE --format dot|mermaid`.
pub(crate) fn cmd_graph(file: &Path, format: GraphFormat) -> Result<(), Failure> {
    print!("{}", graph(&load(file)?, format));
    Ok(())
}

fn graph(t: &topology::Topology, f: GraphFormat) -> String {
    let mut s = String::new();
    let label = |l: &topology::LinkSpec| {
        let mut x = units::fmt_ns(l.model.delay_ns);
        if l.delay_auto {
            x += " (light)";
        }
        x
    };
    match f {
        GraphFormat::Dot => {
            s += &format!("graph \"{}\" {{\n  node [shape=circle];\n", t.name);
            for n in &t.nodes {
                let shape = match n.role {
                    lightcone_core::config::Role::Authority => "doublecircle",
                    lightcone_core::config::Role::Gateway => "box",
                    _ => "circle",
                };
                s += &format!("  \"{}\" [shape={shape}];\n", n.name);
            }
            for l in &t.links {
                s += &format!(
                    "  \"{}\" -- \"{}\" [label=\"{}\"];\n",
                    t.nodes[l.a].name,
                    t.nodes[l.b].name,
                    label(l)
                );
            }
            s += "}\n";
        }
        GraphFormat::Mermaid => {
            s += "graph LR\n";
            let id = |i: usize| format!("n{i}");
            for (i, n) in t.nodes.iter().enumerate() {
                s += &format!("  {}[\"{}\"]\n", id(i), n.name);
            }
            for l in &t.links {
                s += &format!("  {} ---|\"{}\"| {}\n", id(l.a), label(l), id(l.b));
            }
        }
    }
    s
}
