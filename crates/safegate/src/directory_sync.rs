//! The school directory's people into SafeGate's users (`[auth.ldap]`): by hand with
//! `safegate users sync`, and on a schedule (`auth.ldap.sync_interval`) inside the
//! running service. The directory is read here; the store work is
//! [`safegate_control::users_sync`] (the same whether the command line holds the
//! database or asks the running service).

use std::sync::Arc;

use anyhow::{Context, Result};
use safegate_control::users_sync::{SyncedPerson, UsersSync};
use safegate_proxy::auth::{DIRECTORY_PASSWORD_MARK, Directory, DirectoryPerson};
use safegate_store::Store;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::settings::Config;

/// Reads everyone the directory lists, as a sync request.
pub async fn read_directory(directory: &Directory) -> Result<UsersSync> {
    let people = directory
        .people()
        .await
        .context("reading the people of the directory (auth.ldap)")?;
    Ok(UsersSync {
        people: people.into_iter().map(synced).collect(),
        password_mark: DIRECTORY_PASSWORD_MARK.to_owned(),
    })
}

fn synced(person: DirectoryPerson) -> SyncedPerson {
    SyncedPerson {
        name: person.name,
        display_name: person.user.display_name,
        role: person.user.role.as_str().to_owned(),
        group: person.user.group,
    }
}

/// With `auth.ldap.sync_interval` set: syncs at start and then every interval, until
/// shutdown. A failed sync is logged and tried again at the next interval.
pub fn spawn_schedule(
    config: &Config,
    directory: Arc<Directory>,
    store: Store,
    shutdown: CancellationToken,
) {
    let Some(every) = config.auth.ldap.as_ref().and_then(|l| l.sync_interval) else {
        return;
    };
    tokio::spawn(async move {
        loop {
            if let Err(error) = sync_once(&directory, &store).await {
                warn!("directory sync failed: {error:#}");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    });
}

async fn sync_once(directory: &Directory, store: &Store) -> Result<()> {
    let request = read_directory(directory).await?;
    let store = store.clone();
    let output =
        tokio::task::spawn_blocking(move || safegate_control::users_sync::sync(&store, &request))
            .await
            .context("the sync task failed")??;
    info!("{}", output.summary());
    Ok(())
}
