//! The node agent's command line; see the library's documentation for what it does.
use clap::Parser as _;
use x0tta6bl4_node_agent::cli::{AuthorityCommand, Cli, Command, KeysCommand};
use x0tta6bl4_node_agent::{admin, runtime};

fn main() -> anyhow::Result<()> {
    // One TLS provider for the process (neighbour sessions and the Kubernetes client).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Authority {
            command: AuthorityCommand::Init { out },
        }) => {
            let public = admin::authority_init(&out)?;
            println!("{}", public.display());
            Ok(())
        }
        Some(Command::Keys {
            command: KeysCommand::Init { state_dir },
        }) => {
            let public = admin::keys_init(&state_dir)?;
            println!("{}", public.display());
            Ok(())
        }
        Some(Command::Endorse(args)) => {
            let endorsement = admin::endorse(&args)?;
            println!(
                "{} epoch {} valid until {} (unix): {}",
                endorsement.spiffe_id,
                endorsement.key_epoch,
                endorsement.not_after,
                args.out.display()
            );
            Ok(())
        }
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(runtime::run(cli.run)),
    }
}
