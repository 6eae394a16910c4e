//! Review requests: a pupil or member of staff who thinks a block is wrong asks for a
//! review from the block page. The request is queued without waiting and written by
//! one writer task; the admin interface lists them (newest first) and a filter admin
//! approves (the site goes on an allow-list) or rejects them with a reason. Decisions
//! live in the `review_decisions` tree under the request's key.

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
        key[8..].copy_from_slice(&self.trees()?.db.generate_id()?.to_be_bytes());
        self.trees()?
            .reviews
            .insert(key, serde_json::to_vec(review)?)?;
        Ok(())
    }

    /// Review requests with their keys and decisions, newest first, at most `limit`;
    /// only undecided ones when `pending_only`.
    pub fn reviews_with_decisions(
        &self,
        limit: usize,
        pending_only: bool,
    ) -> Result<Vec<ReviewEntry>, StoreError> {
        let decisions = self.trees()?.db.open_tree(DECISIONS_TREE)?;
        let mut found = Vec::new();
        for entry in self.trees()?.reviews.iter().rev() {
            if found.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            let decision = match decisions.get(&key)? {
                Some(bytes) => Some(serde_json::from_slice(&bytes)?),
                None => None,
            };
            if pending_only && decision.is_some() {
                continue;
            }
            found.push(ReviewEntry {
                key: review_key_text(&key),
                request: serde_json::from_slice(&value)?,
                decision,
            });
        }
        Ok(found)
    }

    /// One review request by its key.
    pub fn review(&self, key: &str) -> Result<Option<ReviewEntry>, StoreError> {
        let Some(raw) = parse_review_key(key) else {
            return Ok(None);
        };
        let Some(value) = self.trees()?.reviews.get(raw)? else {
            return Ok(None);
        };
        let decision = match self.trees()?.db.open_tree(DECISIONS_TREE)?.get(raw)? {
            Some(bytes) => Some(serde_json::from_slice(&bytes)?),
            None => None,
        };
        Ok(Some(ReviewEntry {
            key: key.to_owned(),
            request: serde_json::from_slice(&value)?,
            decision,
        }))
    }

    /// Records the decision on a review request; false when there is no such request
    /// or it was decided already (the first decision stands).
    pub fn decide_review(&self, key: &str, decision: &ReviewDecision) -> Result<bool, StoreError> {
        let Some(raw) = parse_review_key(key) else {
            return Ok(false);
        };
        if self.trees()?.reviews.get(raw)?.is_none() {
            return Ok(false);
        }
        let decisions = self.trees()?.db.open_tree(DECISIONS_TREE)?;
        let stored = decisions.compare_and_swap(
            raw,
            None as Option<&[u8]>,
            Some(serde_json::to_vec(decision)?),
        )?;
        decisions.flush()?;
        Ok(stored.is_ok())
    }

    /// Review requests, newest first, at most `limit`.
    pub fn reviews(&self, limit: usize) -> Result<Vec<ReviewRequest>, StoreError> {
        self.trees()?
            .reviews
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

/// The tree of decisions, keyed like `review_requests`.
const DECISIONS_TREE: &str = "review_decisions";

/// A review request's key as text (32 hex digits), for forms and links.
fn review_key_text(key: &[u8]) -> String {
    key.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn parse_review_key(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; 16];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// What a filter admin decided about a review request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewDecision {
    /// Approved (the site was allowed) or rejected.
    pub approved: bool,
    /// Who decided.
    pub by: String,
    /// When, Unix microseconds.
    pub at_unix_micros: u64,
    /// Why (a rejection's reason is meant for the person who asked).
    pub reason: String,
    /// What was allowed, when approved (`bbc.co.uk` for role `pupil`).
    pub allowed: Option<String>,
}

/// A review request with its key and decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReviewEntry {
    /// The request's key (32 hex digits).
    pub key: String,
    /// The request.
    pub request: ReviewRequest,
    /// The decision, once made.
    pub decision: Option<ReviewDecision>,
}

/// The sending side of the review queue, given to the proxy. Never blocks.
#[derive(Clone)]
pub struct ReviewQueue {
    sender: mpsc::Sender<ReviewRequest>,
    store: Store,
}

impl std::fmt::Debug for ReviewQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReviewQueue").finish_non_exhaustive()
    }
}

/// Requests looked at when finding the outcome of someone's request.
const OUTCOME_SCAN: usize = 1000;

impl ReviewQueue {
    /// Queues a request; false when the queue is full or the writer has stopped.
    pub fn submit(&self, review: ReviewRequest) -> bool {
        self.sender.try_send(review).is_ok()
    }

    /// The newest request for `url` by `user` (or, for a computer nobody signed in
    /// on, by `client`) among the last [`OUTCOME_SCAN`], and its decision when made:
    /// what the block page tells the person who asked. `None`: no such request, or
    /// the database cannot be read.
    pub fn outcome(
        &self,
        user: Option<&str>,
        client: IpAddr,
        url: &str,
    ) -> Option<Option<ReviewDecision>> {
        self.store.review_outcome(user, client, url).ok().flatten()
    }
}

impl Store {
    /// See [`ReviewQueue::outcome`].
    pub fn review_outcome(
        &self,
        user: Option<&str>,
        client: IpAddr,
        url: &str,
    ) -> Result<Option<Option<ReviewDecision>>, StoreError> {
        let trees = self.trees()?;
        for entry in trees.reviews.iter().rev().take(OUTCOME_SCAN) {
            let (key, value) = entry?;
            let Ok(request) = serde_json::from_slice::<ReviewRequest>(&value) else {
                continue;
            };
            let same_person = match user {
                Some(user) => request.user.as_deref() == Some(user),
                None => request.user.is_none() && request.client == client,
            };
            if same_person && request.url == url {
                let decision = match trees.db.open_tree(DECISIONS_TREE)?.get(&key)? {
                    Some(bytes) => Some(serde_json::from_slice(&bytes)?),
                    None => None,
                };
                return Ok(Some(decision));
            }
        }
        Ok(None)
    }
}

/// Starts the writer task that drains the queue (`capacity` requests deep) into the
/// store. It ends when every `ReviewQueue` has been dropped, after a final flush.
pub fn spawn_review_writer(
    store: Store,
    capacity: usize,
) -> (ReviewQueue, tokio::task::JoinHandle<()>) {
    let (sender, mut receiver) = mpsc::channel::<ReviewRequest>(capacity.max(1));
    let queue_store = store.clone();
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
    (
        ReviewQueue {
            sender,
            store: queue_store,
        },
        task,
    )
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

#[cfg(test)]
mod decision_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request(at: u64) -> ReviewRequest {
        ReviewRequest {
            at_unix_nanos: at,
            client: IpAddr::from([10, 0, 0, 1]),
            user: Some("pupil1".into()),
            role: "pupil".into(),
            url: "http://games.test/maths".into(),
            rule: "category:pupil:games".into(),
            categories: vec!["games".into()],
            comment: "it is for maths".into(),
        }
    }

    #[test]
    fn the_first_decision_stands_and_pending_ones_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.add_review(&request(1)).unwrap();
        store.add_review(&request(2)).unwrap();
        let all = store.reviews_with_decisions(10, false).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].request.at_unix_nanos, 2, "newest first");
        let key = all[1].key.clone();
        let decision = ReviewDecision {
            approved: false,
            by: "fiona".into(),
            at_unix_micros: 5,
            reason: "use the school's maths site".into(),
            allowed: None,
        };
        assert!(store.decide_review(&key, &decision).unwrap());
        let mut again = decision.clone();
        again.approved = true;
        assert!(!store.decide_review(&key, &again).unwrap(), "decided once");
        assert_eq!(
            store.review(&key).unwrap().unwrap().decision,
            Some(decision)
        );
        let pending = store.reviews_with_decisions(10, true).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].request.at_unix_nanos, 2);
        assert!(!store.decide_review("zz", &again).unwrap());
        assert!(store.review(&"0".repeat(32)).unwrap().is_none());
    }
}
