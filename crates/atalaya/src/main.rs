//! `atalaya`: the command line. Parses arguments and hands over to one command module;
//! no business logic lives here.

mod audit;
mod cli;
mod client;
mod compare;
mod config;
mod keys;
mod mock;
mod providers;
mod reload;
mod reports;
mod serve;
mod tls;
mod vault;

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc: the proxy allocates and frees many small buffers per request; glibc malloc
/// spent ~12 % of CPU in the gateway benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            cli::Command::Serve(args) => serve::run(args).await,
            cli::Command::MockProvider(args) => mock::run(args).await,
            cli::Command::Keys(args) => keys::run(args).await,
            cli::Command::Providers(args) => providers::run(args),
            cli::Command::Compare(args) => compare::run(args).await,
            cli::Command::Secrets(args) => vault::run(args).await,
            cli::Command::Audit(args) => audit::run(args).await,
            cli::Command::Reload(args) => reload::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
