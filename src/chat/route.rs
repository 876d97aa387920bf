//! Which resource a request asks for (DESIGN.md, "Chat protocol").

use crate::ws::{HandshakeError, Request};

use super::names::{Name, RoomName};

/// What the server does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: the browser chat page.
    Page,
    /// `GET /stats`: JSON statistics.
    Stats,
    /// `GET /metrics`: the same counters in the Prometheus text format.
    Metrics,
    /// Upgrade on `/echo`: every message comes back as it was sent.
    Echo,
    /// Upgrade on `/`, `/chat` (room `lobby`) or `/chat/<room>`; `name` from `?name=`.
    Join { room: RoomName, name: Option<Name> },
}

/// Routes a validated request, or says why it cannot be served.
///
/// An upgrade whose `Origin` is not in `allowed_origins` gets 403 (cross-site WebSocket
/// hijacking: a page elsewhere opening a socket with the user's cookies); an empty list allows
/// any origin, and a request without `Origin` (not from a browser) is never refused for it.
pub fn route(request: &Request, allowed_origins: &[String]) -> Result<Route, HandshakeError> {
    let path = request.path.as_str();
    let Some(upgrade) = &request.upgrade else {
        return match path {
            "/" => Ok(Route::Page),
            "/stats" => Ok(Route::Stats),
            "/metrics" => Ok(Route::Metrics),
            _ => Err(HandshakeError::NotFound(path.to_string())),
        };
    };
    if let Some(origin) = &upgrade.origin
        && !allowed_origins.is_empty()
        && !allowed_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
    {
        return Err(HandshakeError::ForbiddenOrigin(origin.clone()));
    }
    let room = match path {
        "/echo" => return Ok(Route::Echo),
        "/" | "/chat" => RoomName::lobby(),
        _ => match path.strip_prefix("/chat/") {
            Some(room) => RoomName::parse(room)?,
            None => return Err(HandshakeError::NotFound(path.to_string())),
        },
    };
    let name = query_param(request.query.as_deref(), "name")
        .map(|raw| Name::parse(&raw).map_err(|e| HandshakeError::InvalidName(e.to_string())))
        .transpose()?;
    Ok(Route::Join { room, name })
}

/// The first value of `key` in a query string, percent- and `+`-decoded.
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::Upgrade;

    fn request(target: &str, upgrade: bool) -> Request {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (target.to_string(), None),
        };
        Request {
            path,
            query,
            upgrade: upgrade.then(|| Upgrade {
                key: String::new(),
                origin: None,
            }),
        }
    }

    #[test]
    fn plain_routes() {
        assert_eq!(route(&request("/", false), &[]), Ok(Route::Page));
        assert_eq!(route(&request("/stats", false), &[]), Ok(Route::Stats));
        assert_eq!(route(&request("/metrics", false), &[]), Ok(Route::Metrics));
        assert_eq!(
            route(&request("/chat", false), &[]).unwrap_err().status(),
            404
        );
        assert_eq!(
            route(&request("/favicon.ico", false), &[])
                .unwrap_err()
                .status(),
            404
        );
    }

    #[test]
    fn upgrade_routes() {
        let lobby = Route::Join {
            room: RoomName::lobby(),
            name: None,
        };
        assert_eq!(route(&request("/", true), &[]), Ok(lobby.clone()));
        assert_eq!(route(&request("/chat", true), &[]), Ok(lobby));
        assert_eq!(route(&request("/echo", true), &[]), Ok(Route::Echo));
        assert_eq!(
            route(&request("/chat/dev-1?name=Ann+Lee", true), &[]),
            Ok(Route::Join {
                room: RoomName::parse("dev-1").unwrap(),
                name: Some(Name::parse("Ann Lee").unwrap())
            })
        );
        assert_eq!(
            route(&request("/chat?x=1&name=Bo%20B", true), &[]),
            Ok(Route::Join {
                room: RoomName::lobby(),
                name: Some(Name::parse("Bo B").unwrap())
            })
        );
    }

    #[test]
    fn upgrade_errors() {
        assert_eq!(
            route(&request("/chat/", true), &[]).unwrap_err().status(),
            400
        );
        assert_eq!(
            route(&request("/chat/a%20b", true), &[])
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            route(&request("/chat?name=", true), &[])
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            route(&request("/chat?name=%20x", true), &[])
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            route(&request("/chat?name=a%3Ab", true), &[])
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            route(&request("/stats", true), &[]).unwrap_err().status(),
            404
        );
        assert_eq!(
            route(&request("/metrics", true), &[]).unwrap_err().status(),
            404
        );
    }

    #[test]
    fn origins_outside_the_allowed_list_get_403() {
        let allowed = ["https://chat.example".to_string()];
        let with_origin = |origin: Option<&str>| Request {
            path: "/chat".into(),
            query: None,
            upgrade: Some(crate::ws::Upgrade {
                key: String::new(),
                origin: origin.map(String::from),
            }),
        };
        let evil = with_origin(Some("https://evil.example"));
        assert_eq!(route(&evil, &allowed).unwrap_err().status(), 403);
        assert!(route(&evil, &[]).is_ok(), "no list: any origin");
        assert!(route(&with_origin(Some("HTTPS://chat.example")), &allowed).is_ok());
        assert!(route(&with_origin(None), &allowed).is_ok(), "not a browser");
    }
}
