//! berth: the docker-compatible command line client. It talks to berthd only
//! through the Docker Engine API, and prints what docker prints: the same
//! tables, `--format` templates, messages and exit codes.
#![forbid(unsafe_code)]

mod build;
mod client;
mod commit;
mod containers;
mod cp;
mod hijack;
mod images;
mod network;
mod ops;
mod pull;
mod registry;
mod system;
mod tty;
mod volumes;

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

/// `defer`: only the subcommand being run has its flags built (every
/// command's are 0.5 ms of each call's start).
#[derive(Subcommand)]
#[command(defer = true)]
enum Cmd {
    /// Create and run a new container from an image
    Run(containers::RunArgs),
    /// Execute a command in a running container
    Exec(containers::ExecArgs),
    /// List containers
    Ps(containers::PsArgs),
    /// Manage containers
    #[command(subcommand)]
    Container(containers::ContainerCmd),
    /// Attach local standard input, output, and error streams to a running container
    Attach(containers::AttachArgs),
    /// Create a new image from a container's changes
    Commit(commit::CommitArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(cp::CpArgs),
    /// Create a new container
    Create(containers::CreateArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(commit::DiffArgs),
    /// Export a container's filesystem as a tar archive
    Export(cp::ExportArgs),
    /// Kill one or more running containers
    Kill(containers::KillArgs),
    /// Fetch the logs of a container
    Logs(containers::LogsArgs),
    /// Pause all processes within one or more containers
    Pause(containers::NamesArgs),
    /// Rename a container
    Rename(containers::RenameArgs),
    /// Restart one or more containers
    Restart(containers::StopArgs),
    /// Remove one or more containers
    Rm(containers::RmArgs),
    /// Start one or more stopped containers
    Start(containers::StartArgs),
    /// Stop one or more running containers
    Stop(containers::StopArgs),
    /// Display the running processes of a container
    Top(containers::TopArgs),
    /// Unpause all processes within one or more containers
    Unpause(containers::NamesArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(ops::StatsArgs),
    /// Update configuration of one or more containers
    Update(ops::UpdateArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(containers::NamesArgs),
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
    /// Download an image from a registry
    Pull(pull::PullArgs),
    /// Upload an image to a registry
    Push(pull::PushArgs),
    /// Authenticate to a registry
    Login(registry::LoginArgs),
    /// Log out from a registry
    Logout(registry::LogoutArgs),
    /// Manage networks
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// List port mappings or a specific mapping for the container
    Port(network::PortArgs),
    /// Return low-level information on berth objects
    Inspect(containers::InspectArgs),
    /// Manage berth
    #[command(subcommand)]
    System(system::SystemCmd),
    /// Get real time events from the server
    Events(system::EventsArgs),
    /// Manage volumes
    #[command(subcommand)]
    Volume(volumes::VolumeCmd),
    /// Build an image from a Dockerfile
    Build(build::BuildArgs),
    /// Manage builds
    #[command(subcommand)]
    Builder(build::BuilderCmd),
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
            Cmd::Run(a) => containers::run(&client, a).await,
            Cmd::Exec(a) => containers::exec(&client, a).await,
            Cmd::Ps(a) => containers::ps(&client, a).await,
            Cmd::Container(c) => containers::container(&client, c).await,
            Cmd::Attach(a) => containers::attach(&client, a).await,
            Cmd::Commit(a) => commit::commit(&client, a).await,
            Cmd::Cp(a) => cp::cp(&client, a).await,
            Cmd::Create(a) => containers::create(&client, a).await,
            Cmd::Diff(a) => commit::diff(&client, a).await,
            Cmd::Export(a) => cp::export(&client, a).await,
            Cmd::Kill(a) => containers::kill(&client, a).await,
            Cmd::Logs(a) => containers::logs(&client, a).await,
            Cmd::Pause(a) => containers::pause(&client, a, true).await,
            Cmd::Rename(a) => containers::rename(&client, a).await,
            Cmd::Restart(a) => containers::stop(&client, a, true).await,
            Cmd::Rm(a) => containers::rm(&client, a).await,
            Cmd::Start(a) => containers::start(&client, a).await,
            Cmd::Stop(a) => containers::stop(&client, a, false).await,
            Cmd::Top(a) => containers::top(&client, a).await,
            Cmd::Unpause(a) => containers::pause(&client, a, false).await,
            Cmd::Stats(a) => ops::stats(&client, a).await,
            Cmd::Update(a) => ops::update(&client, a).await,
            Cmd::Wait(a) => containers::wait(&client, a).await,
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
            Cmd::Pull(a) => pull::pull(&client, a).await,
            Cmd::Push(a) => pull::push(&client, a).await,
            Cmd::Login(a) => registry::login(&client, a).await,
            Cmd::Logout(a) => registry::logout(a).await,
            Cmd::Network(c) => network::network(&client, c).await,
            Cmd::Port(a) => network::port(&client, a).await,
            Cmd::Inspect(a) => containers::inspect(&client, a).await,
            Cmd::System(c) => system::system(&client, c).await,
            Cmd::Events(a) => system::events(&client, a).await,
            Cmd::Volume(c) => volumes::volume(&client, c).await,
            Cmd::Build(a) => build::build(&client, a).await,
            Cmd::Builder(c) => build::builder(&client, c).await,
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
