//! The entry point for every request hyper parsed on a client connection (explicit
//! proxy clients, and transparent HTTP once its target is rewritten): route it to
//! SafeGate's own pages (status page, PAC file, login portal, review form), a CONNECT
//! tunnel ([`crate::tunnel`]) or the origin ([`crate::forward`]). Requests for tunnels
//! and origins are first identified ([`pipeline::identify`]): a client that must log in
//! gets `407`, or, where `auth.portal` covers it, a page request (`GET`/`HEAD` of an
//! `http://` URL) from a client nobody identified is redirected to the login page
//! ([`crate::portal_pages`], served here without authentication like SafeGate's other
//! own pages).

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use safegate_store::SeenAs;

use crate::auth::Identity;
use crate::body::ResponseBody;
use crate::forward;
use crate::intake::{ClientContext, Intake};
use crate::local_pages;
use crate::pipeline::{self, Ledger};
use crate::portal_pages;
use crate::state::ProxyState;
use crate::tunnel;
use crate::userinfo::target_without_userinfo;

/// Answers one request on a client connection.
pub(crate) async fn handle(
    state: Arc<ProxyState>,
    client: Arc<ClientContext>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let ledger = Ledger::begin(
        &state,
        &client,
        request.method().as_str(),
        request.uri().host(),
    );
    let target = target_without_userinfo(request.uri());
    if request.method() == Method::CONNECT {
        return match pipeline::identify(&state, &client, request.headers(), &target, false).await {
            Ok(who) => tunnel::open(&state, &client, ledger, request, who).await,
            Err(refusal) => pipeline::finish(ledger, refusal, None),
        };
    }
    if addressed_to_us(request.uri().authority(), &client, state.listen) {
        let page = own_page(&state, &client, request).await;
        return pipeline::finish(ledger, page, None);
    }
    let page_request = matches!(*request.method(), Method::GET | Method::HEAD)
        && request.uri().scheme() == Some(&Scheme::HTTP);
    match pipeline::identify(&state, &client, request.headers(), &target, page_request).await {
        Ok(who) if must_log_in(&state, &client, &request, &who.identity) => {
            let page = portal_pages::redirect_to_login(client.local, &target);
            pipeline::finish(ledger, page, None)
        }
        Ok(who) => {
            let seen_as = SeenAs::PlainHttp;
            forward::forward(&state, &client, ledger, request, who, seen_as, target).await
        }
        Err(refusal) => pipeline::finish(ledger, refusal, None),
    }
}

/// Whether an unidentified client's page request goes to the login portal instead:
/// a `GET` or `HEAD` of an `http://` page by a client nobody identified (no credentials,
/// portal log-in or binding), where `auth.portal` covers its listener and there are
/// users to log in as.
fn must_log_in(
    state: &ProxyState,
    client: &ClientContext,
    request: &Request<Incoming>,
    identity: &Identity,
) -> bool {
    identity.identified_by == safegate_store::IdentifiedBy::Default
        && matches!(*request.method(), Method::GET | Method::HEAD)
        && request.uri().scheme() == Some(&Scheme::HTTP)
        && state
            .auth
            .portal_redirects(matches!(client.intake, Intake::Transparent { .. }))
}

/// True for origin-form requests and for absolute-form requests naming the address
/// the client connected to (a browser using the proxy fetches SafeGate's own pages,
/// such as the review form target, that way).
fn addressed_to_us(
    authority: Option<&Authority>,
    client: &ClientContext,
    listen: SocketAddr,
) -> bool {
    let Some(authority) = authority else {
        return true;
    };
    let port = authority.port_u16().unwrap_or(80);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let Ok(ip) = host.parse::<std::net::IpAddr>() else {
        return false;
    };
    [client.local, listen]
        .iter()
        .any(|own| own.port() == port && own.ip() == ip)
}

async fn own_page(
    state: &Arc<ProxyState>,
    client: &ClientContext,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    if matches!(
        request.uri().path(),
        portal_pages::LOGIN_PATH | portal_pages::LOGOUT_PATH
    ) {
        let portal_client = portal_pages::PortalClient {
            peer: client.peer.ip(),
            local: client.local,
            listen: state.listen,
            body_read_timeout: state.body_read_timeout,
        };
        return portal_pages::serve(&state.auth, portal_client, request).await;
    }
    if request.method() == Method::POST && request.uri().path() == local_pages::REVIEW_PATH {
        // Credentials are not required for SafeGate's own pages; when they are sent
        // and right, the review request names the user.
        let identity = match pipeline::identify(state, client, request.headers(), "", false).await {
            Ok(who) => who.identity,
            Err(_) => pipeline::identify_by_address(state, client.peer.ip()).identity,
        };
        return pipeline::answer_review(state, client.peer.ip(), &identity, request).await;
    }
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    local_pages::serve(
        request.method(),
        request.uri().path(),
        host.as_deref(),
        &state.pac,
        state.listen,
        state.status_figures(),
    )
}
