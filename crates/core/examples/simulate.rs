//! `scripts/simulate`: run the deterministic simulation of the core over many seeds, or replay
//! one with its trace. See `crates/core/src/sim.rs`.
//!
//! simulate [--seeds N] [--from S] [--seed S [--trace]]

use outbox_core::sim::{run_seeds, Sim};
use std::time::Instant;

fn main() {
    let mut seeds: u64 = 1000;
    let mut from: u64 = 0;
    let mut one: Option<u64> = None;
    let mut trace = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> u64 {
            match args.next().and_then(|v| v.replace('_', "").parse().ok()) {
                Some(n) => n,
                None => {
                    eprintln!("simulate: {name} needs a number");
                    std::process::exit(2);
                }
            }
        };
        match a.as_str() {
            "--seeds" => seeds = num("--seeds"),
            "--from" => from = num("--from"),
            "--seed" => one = Some(num("--seed")),
            "--trace" => trace = true,
            "-h" | "--help" => {
                println!("usage: simulate [--seeds N] [--from S] [--seed S [--trace]]");
                return;
            }
            other => {
                eprintln!("simulate: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let started = Instant::now();
    if let Some(seed) = one {
        let mut sim = Sim::new(seed);
        sim.trace = trace;
        let r = sim.run();
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let v = u32::from(r.is_err());
        if let Err(v) = &r {
            println!("{}", v.log_tail.join("\n"));
            println!(
                "seed {} broke an invariant at step {}: {}",
                v.seed, v.step, v.what
            );
        }
        println!(
            "simulate: 1 seeds, {v} violations, {:.0} steps/s",
            sim.steps as f64 / secs
        );
        std::process::exit(i32::from(r.is_err()));
    }
    let (bad, steps) = run_seeds(from, seeds);
    for v in &bad {
        println!(
            "seed {} broke an invariant at step {}: {}",
            v.seed, v.step, v.what
        );
        println!("  replay: scripts/simulate --seed {} --trace", v.seed);
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "simulate: {seeds} seeds, {} violations, {:.0} steps/s",
        bad.len(),
        steps as f64 / secs
    );
    std::process::exit(i32::from(!bad.is_empty()));
}
