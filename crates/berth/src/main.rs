//! berth: the docker-compatible command line client. It talks to berthd only
//! through the Docker Engine API, and prints what docker prints: the same
//! tables, `--format` templates, messages and exit codes.

mod client;
mod images;
mod system;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use client::{Client, DaemonError};

pub const DEFAULT_HOST: &str = "unix:///run/berth/berth.sock";

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A self-sufficient runtime for containers",
    disable_help_subcommand = true
)]
struct Cli {
    /// Daemon socket to connect to
    #[arg(short = 'H', long = "host", env = "BERTH_HOST")]
    host: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show the berth version information
    Version(system::VersionArgs),
    /// Display system-wide information
    Info(system::InfoArgs),
    /// List images
    Images(images::ListArgs),
    /// Manage images
    #[command(subcommand)]
    Image(images::ImageCmd),
    /// Show the history of an image
    History(images::HistoryArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(images::TagArgs),
    /// Remove one or more images
    Rmi(images::RmiArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(images::SaveArgs),
    /// Load an image from a tar archive or STDIN
    Load(images::LoadArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(images::ImportArgs),
    /// Return low-level information on berth objects
    Inspect(images::InspectArgs),
    /// Manage berth
    #[command(subcommand)]
    System(system::SystemCmd),
    /// Get real time events from the server
    Events(system::EventsArgs),
}

/// An exit status chosen by a command (docker's codes), not an error to print.
#[derive(Debug)]
pub struct Exit(pub u8);
impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}
impl std::error::Error for Exit {}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 125, // docker's status for usage errors
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let host = cli.host.unwrap_or_else(|| DEFAULT_HOST.to_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let res = rt.block_on(async move {
        let client = Client::new(&host)?;
        match cli.cmd {
            Cmd::Version(a) => system::version(&client, a).await,
            Cmd::Info(a) => system::info(&client, a).await,
            Cmd::Images(a) => images::list(&client, a).await,
            Cmd::Image(c) => images::image(&client, c).await,
            Cmd::History(a) => images::history(&client, a).await,
            Cmd::Tag(a) => images::tag(&client, a).await,
            Cmd::Rmi(a) => images::rmi(&client, a).await,
            Cmd::Save(a) => images::save(&client, a).await,
            Cmd::Load(a) => images::load(&client, a).await,
            Cmd::Import(a) => images::import(&client, a).await,
            Cmd::Inspect(a) => images::inspect(&client, a).await,
            Cmd::System(c) => system::system(&client, c).await,
            Cmd::Events(a) => system::events(&client, a).await,
        }
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(Exit(code)) = e.downcast_ref::<Exit>() {
                return ExitCode::from(*code);
            }
            if let Some(d) = e.downcast_ref::<DaemonError>() {
                eprintln!("{d}");
            } else {
                eprintln!("{e:#}");
            }
            ExitCode::from(1)
        }
    }
}
