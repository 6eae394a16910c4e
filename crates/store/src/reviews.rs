//! Review requests: a pupil or member of staff who thinks a block is wrong asks for a
//! review from the block page. The request is queued without waiting and written by
//! one writer task; the admin interface lists them (newest first).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::{Store, StoreError};

/// One "please review this block" request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewRequest {
    /// When it was made, Unix nanoseconds.
    pub at_unix_nanos: u64,
    /// The client's address.
    pub client: IpAddr,
    /// The user name, when the client was identified.
    pub user: Option<String>,
    /// The browsing role the decision was made for.
    pub role: String,
    /// The blocked address.
    pub url: String,
    /// The rule that blocked it.
    pub rule: String,
    /// Categories the address is in.
    pub categories: Vec<String>,
    /// What the person wrote (limited in length).
    pub comment: String,
}

impl Store {
    /// Appends a review request.
    pub fn add_review(&self, review: &ReviewRequest) -> Result<(), StoreError> {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&review.at_unix_nanos.to_be_bytes());
        key[8..].copy_from_slice(&self.db.generate_id()?.to_be_bytes());
        self.reviews.insert(key, serde_json::to_vec(review)?)?;
        Ok(())
    }

    /// Review requests, newest first, at most `limit`.
    pub fn reviews(&self, limit: usize) -> Result<Vec<ReviewRequest>, StoreError> {
        self.reviews
            .iter()
            .rev()
            .take(limit)
            .map(|entry| {
                let (_, value) = entry?;
                Ok(serde_json::from_slice(&value)?)
            })
            .collect()
    }
}

/// The sending side of the review queue, given to the proxy. Never blocks.
#[derive(Debug, Clone)]
pub struct ReviewQueue {
    sender: mpsc::Sender<ReviewRequest>,
}

impl ReviewQueue {
    /// Queues a request; false when the queue is full or the writer has stopped.
    pub fn submit(&self, review: ReviewRequest) -> bool {
        self.sender.try_send(review).is_ok()
    }
}

/// Starts the writer task that drains the queue (`capacity` requests deep) into the
/// store. It ends when every `ReviewQueue` has been dropped, after a final flush.
pub fn spawn_review_writer(
    store: Store,
    capacity: usize,
) -> (ReviewQueue, tokio::task::JoinHandle<()>) {
    let (sender, mut receiver) = mpsc::channel::<ReviewRequest>(capacity.max(1));
    let task = tokio::spawn(async move {
        while let Some(review) = receiver.recv().await {
            let writing = store.clone();
            let url = review.url.clone();
            let written = tokio::task::spawn_blocking(move || writing.add_review(&review)).await;
            match written {
                Ok(Ok(())) => info!(url, "review request recorded"),
                Ok(Err(err)) => error!(%err, url, "review request NOT recorded"),
                Err(err) => error!(%err, url, "review writer failed"),
            }
            if let Err(err) = store.flush().await {
                warn!(%err, "cannot flush the database");
            }
        }
    });
    (ReviewQueue { sender }, task)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn review(at: u64, url: &str) -> ReviewRequest {
        ReviewRequest {
            at_unix_nanos: at,
            client: IpAddr::from([127, 0, 0, 1]),
            user: None,
            role: "pupil".into(),
            url: url.into(),
            rule: "category:pupil:gambling".into(),
            categories: vec!["gambling".into()],
            comment: "needed for maths homework on probability".into(),
        }
    }

    #[tokio::test]
    async fn queued_reviews_are_written_and_listed_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (queue, writer) = spawn_review_writer(store.clone(), 8);
        assert!(queue.submit(review(1, "http://a.test/")));
        assert!(queue.submit(review(2, "http://b.test/")));
        drop(queue);
        writer.await.unwrap();
        let listed = store.reviews(10).unwrap();
        assert_eq!(
            listed,
            vec![review(2, "http://b.test/"), review(1, "http://a.test/")]
        );
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.reviews(1).unwrap().len(), 1);
    }
}
