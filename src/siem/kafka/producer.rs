//! A Kafka producer whose every name lookup goes through the egress guard.
//!
//! librdkafka resolves broker names itself: the bootstrap list, the brokers a cluster
//! advertises in its metadata (at any refresh), and each of them again on every reconnect.
//! With the operating system's resolver that bypasses the egress policy three ways: a name
//! answering allowed and denied addresses gets connected to the denied ones, a name may rebind
//! between our check and librdkafka's lookup, and brokers advertised later are never checked.
//!
//! rust-rdkafka's producers build their librdkafka configuration internally, with no way to
//! install librdkafka's resolve callback, so this producer is built on rust-rdkafka's public
//! [`Client`] with a native configuration that carries four callbacks of ours:
//! - `resolve_cb` answers every lookup librdkafka makes (names and IP literals alike) with the
//!   addresses [`GuardedResolver`] allows, so denied addresses are never connected to; a name
//!   with no allowed address fails to resolve, and the refusal is kept to explain the failure;
//! - `dr_msg_cb` completes each record's [`Delivery`] future;
//! - `error_cb` and `log_cb` report to the [`Recorder`] and to `tracing`.
//!
//! A thread of the producer's own serves the callbacks (`rd_kafka_poll`). Dropping the
//! producer stops it; the thread then purges what is still queued (completing every pending
//! future with an error) and destroys the client.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::{RDKafkaRespErr, RDKafkaType};
use tokio::sync::{oneshot, watch};

use crate::siem::egress::{find_resolve_denied, EgressPolicy, GuardedResolver, Lookup, Standing};

/// How long one lookup of a broker name may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

// librdkafka's own symbol; bindgen leaves it out of `rdkafka-sys` because it takes
// `struct addrinfo`.
extern "C" {
    fn rd_kafka_conf_set_resolve_cb(
        conf: *mut rd::rd_kafka_conf_t,
        resolve_cb: Option<
            unsafe extern "C" fn(
                node: *const c_char,
                service: *const c_char,
                hints: *const libc::addrinfo,
                res: *mut *mut libc::addrinfo,
                opaque: *mut c_void,
            ) -> c_int,
        >,
    );
}

/// An error librdkafka reported: its code, when it has one, and its reason.
pub type Reported = (Option<RDKafkaErrorCode>, String);

/// What librdkafka reported, to explain a failure in plain language: its last error, and the
/// last broker address the egress policy refused.
#[derive(Clone)]
pub struct Recorder {
    last_error: Arc<Mutex<Option<Reported>>>,
    refused: Arc<watch::Sender<Option<String>>>,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder {
            last_error: Arc::default(),
            refused: Arc::new(watch::channel(None).0),
        }
    }
}

impl Recorder {
    /// The last error librdkafka reported.
    pub fn last(&self) -> Option<Reported> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Keeps an error librdkafka reported.
    pub fn record(&self, code: Option<RDKafkaErrorCode>, reason: &str) {
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        // "All brokers are down" follows the reason they are (refused, unresolvable, TLS,
        // sign-in): keep the reason.
        if code == Some(RDKafkaErrorCode::AllBrokersDown) && last.is_some() {
            return;
        }
        *last = Some((code, reason.to_owned()));
    }

    /// Why the egress policy refused a broker address, if it did.
    pub fn refused(&self) -> Option<String> {
        self.refused.borrow().clone()
    }

    fn refuse(&self, reason: String) {
        tracing::debug!(%reason, "a Kafka broker address was refused by the egress policy");
        self.refused.send_replace(Some(reason));
    }

    /// Resolves once a broker address has been refused (at once if one already was).
    pub async fn wait_refused(&self) {
        let mut rx = self.refused.subscribe();
        // The sender lives as long as `self`: `wait_for` cannot fail here.
        let _ = rx.wait_for(Option::is_some).await;
    }
}

/// The client context: librdkafka's opaque points here in every callback.
///
/// Lookups run on librdkafka's broker threads and wait on the tokio runtime
/// (`Handle::block_on`), up to [`LOOKUP_TIMEOUT`]. Every lookup goes through here as long as
/// `client.dns.lookup` keeps its default: `resolve_canonical_bootstrap_servers_only` would
/// resolve in `rd_kafka_new` (on a runtime thread, where the lookup fails) and add a reverse
/// lookup outside the guard.
pub struct Guard {
    recorder: Recorder,
    policy: Arc<EgressPolicy>,
    lookup: Arc<dyn Lookup>,
    runtime: tokio::runtime::Handle,
}

impl ClientContext for Guard {}

impl Guard {
    /// A context judging every lookup by `policy`, asking `lookup`, on `runtime`.
    pub fn new(
        recorder: Recorder,
        policy: Arc<EgressPolicy>,
        lookup: Arc<dyn Lookup>,
        runtime: tokio::runtime::Handle,
    ) -> Guard {
        Guard {
            recorder,
            policy,
            lookup,
            runtime,
        }
    }

    /// The addresses of `host` librdkafka may connect to; the refusal otherwise.
    fn allowed(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return if self.policy.standing_ip(ip) != Standing::Refused {
                Ok(vec![ip])
            } else {
                Err(format!("The cluster sent cloudpki to broker address {ip}, a private, loopback or reserved address that SIEM calls may not reach; list it in CLOUDPKI_EGRESS_ALLOW if this internal cluster is intended."))
            };
        }
        let resolver = GuardedResolver::new(self.policy.clone(), self.lookup.clone());
        let answer = self.runtime.block_on(async {
            tokio::time::timeout(LOOKUP_TIMEOUT, resolver.resolve_allowed(host)).await
        });
        match answer {
            Ok(Ok(ips)) => Ok(ips),
            Ok(Err(err)) => match find_resolve_denied(&err) {
                Some(denied) => Err(format!("Kafka broker {denied}")),
                // Not a refusal: librdkafka reports the lookup failure itself.
                None => Ok(Vec::new()),
            },
            Err(_) => Ok(Vec::new()),
        }
    }
}

/// One `addrinfo` with its address, allocated by us and freed by us (librdkafka hands every
/// list back to `resolve_cb` to be freed).
#[repr(C)]
struct Answer {
    info: libc::addrinfo,
    addr: libc::sockaddr_storage,
}

fn answer_list(ips: &[IpAddr], port: u16, hints: &libc::addrinfo) -> *mut libc::addrinfo {
    let mut head: *mut libc::addrinfo = std::ptr::null_mut();
    for ip in ips.iter().rev() {
        let family = match ip {
            IpAddr::V4(_) => libc::AF_INET,
            IpAddr::V6(_) => libc::AF_INET6,
        };
        if hints.ai_family != libc::AF_UNSPEC && hints.ai_family != family {
            continue;
        }
        // SAFETY: both are plain C structs for which all-zero bytes are a valid value.
        let mut answer: Box<Answer> = Box::new(unsafe { std::mem::zeroed() });
        let len = match ip {
            IpAddr::V4(v4) => {
                // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
                let sin = unsafe {
                    &mut *(&mut answer.addr as *mut libc::sockaddr_storage)
                        .cast::<libc::sockaddr_in>()
                };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = port.to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
                std::mem::size_of::<libc::sockaddr_in>()
            }
            IpAddr::V6(v6) => {
                // SAFETY: as above.
                let sin6 = unsafe {
                    &mut *(&mut answer.addr as *mut libc::sockaddr_storage)
                        .cast::<libc::sockaddr_in6>()
                };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = port.to_be();
                sin6.sin6_addr.s6_addr = v6.octets();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        answer.info.ai_family = family;
        answer.info.ai_socktype = hints.ai_socktype;
        answer.info.ai_protocol = hints.ai_protocol;
        answer.info.ai_addrlen = len as libc::socklen_t;
        answer.info.ai_addr = (&mut answer.addr as *mut libc::sockaddr_storage).cast();
        answer.info.ai_next = head;
        head = Box::into_raw(answer).cast();
    }
    head
}

/// Frees a list built by [`answer_list`].
///
/// # Safety
/// `list` is null or came from [`answer_list`] and was not freed before.
unsafe fn free_answers(mut list: *mut libc::addrinfo) {
    while !list.is_null() {
        let answer = Box::from_raw(list.cast::<Answer>());
        list = answer.info.ai_next;
    }
}

unsafe extern "C" fn resolve_cb(
    node: *const c_char,
    service: *const c_char,
    hints: *const libc::addrinfo,
    res: *mut *mut libc::addrinfo,
    opaque: *mut c_void,
) -> c_int {
    if node.is_null() && service.is_null() && hints.is_null() {
        if !res.is_null() {
            free_answers(*res);
        }
        return 0;
    }
    if node.is_null() || hints.is_null() || res.is_null() || opaque.is_null() {
        return libc::EAI_FAIL;
    }
    let guard = &*(opaque as *const Guard);
    let host = CStr::from_ptr(node).to_string_lossy().into_owned();
    let port = if service.is_null() {
        Some(0)
    } else {
        CStr::from_ptr(service)
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u16>().ok())
    };
    let Some(port) = port else {
        return libc::EAI_SERVICE;
    };
    let hints = &*hints;
    let outcome = catch_unwind(AssertUnwindSafe(|| guard.allowed(&host)));
    match outcome {
        Ok(Ok(ips)) => {
            let list = answer_list(&ips, port, hints);
            if list.is_null() {
                return libc::EAI_NONAME;
            }
            *res = list;
            0
        }
        Ok(Err(refusal)) => {
            guard.recorder.refuse(refusal);
            libc::EAI_FAIL
        }
        Err(_) => libc::EAI_FAIL,
    }
}

unsafe extern "C" fn delivered_cb(
    _rk: *mut rd::rd_kafka_t,
    message: *const rd::rd_kafka_message_t,
    _opaque: *mut c_void,
) {
    if message.is_null() || (*message)._private.is_null() {
        return;
    }
    let message = &*message;
    // Nothing below panics; were it to, unwinding into librdkafka would be undefined.
    let sender = Box::from_raw(message._private.cast::<oneshot::Sender<DeliveryResult>>());
    let result = if message.err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
        Ok(Delivered {
            partition: message.partition,
            offset: message.offset,
        })
    } else {
        Err(KafkaError::MessageProduction(message.err.into()))
    };
    let _ = sender.send(result);
}

unsafe extern "C" fn error_cb(
    _rk: *mut rd::rd_kafka_t,
    err: c_int,
    reason: *const c_char,
    opaque: *mut c_void,
) {
    if opaque.is_null() {
        return;
    }
    let guard = &*(opaque as *const Guard);
    let reason = if reason.is_null() {
        String::new()
    } else {
        CStr::from_ptr(reason).to_string_lossy().into_owned()
    };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        guard.recorder.record(error_code(err), &reason)
    }));
}

unsafe extern "C" fn log_cb(
    _rk: *const rd::rd_kafka_t,
    level: c_int,
    fac: *const c_char,
    buf: *const c_char,
) {
    let text = |p: *const c_char| {
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    let (fac, message) = (text(fac), text(buf));
    // librdkafka never logs passwords; syslog levels, 4 = warning.
    let _ = catch_unwind(|| {
        if level <= 4 {
            tracing::debug!(fac, "librdkafka: {message}");
        } else {
            tracing::trace!(fac, "librdkafka: {message}");
        }
    });
}

/// The error codes an `error_cb` may carry that explanations look at.
fn error_code(err: c_int) -> Option<RDKafkaErrorCode> {
    use RDKafkaRespErr as E;
    [
        E::RD_KAFKA_RESP_ERR__RESOLVE,
        E::RD_KAFKA_RESP_ERR__SSL,
        E::RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN,
        E::RD_KAFKA_RESP_ERR__AUTHENTICATION,
        E::RD_KAFKA_RESP_ERR__TRANSPORT,
        E::RD_KAFKA_RESP_ERR__TIMED_OUT,
        E::RD_KAFKA_RESP_ERR__MSG_TIMED_OUT,
        E::RD_KAFKA_RESP_ERR__FATAL,
        E::RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED,
        E::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        E::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED,
        E::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
    ]
    .into_iter()
    .find(|e| *e as c_int == err)
    .map(RDKafkaErrorCode::from)
}

/// Where a record was stored.
#[derive(Debug, Clone, Copy)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// A record's acknowledgement, or why it failed.
pub type DeliveryResult = Result<Delivered, KafkaError>;

/// A record's pending acknowledgement; an error if the producer went away first.
pub type Delivery = oneshot::Receiver<DeliveryResult>;

/// A producer of our own over rust-rdkafka's [`Client`], with the guarded resolver installed.
pub struct GuardedProducer {
    client: Arc<Client<Guard>>,
    stop: Arc<AtomicBool>,
}

impl GuardedProducer {
    /// Builds the producer from `config` with `guard` as its context, and starts its thread.
    pub fn new(config: &ClientConfig, guard: Guard) -> Result<GuardedProducer, KafkaError> {
        let native = config.create_native_config()?;
        // SAFETY: `native` is a valid configuration; the callbacks match librdkafka's
        // signatures and read the opaque as the `Guard` that `Client::new` installs.
        unsafe {
            rd_kafka_conf_set_resolve_cb(native.ptr(), Some(resolve_cb));
            rd::rd_kafka_conf_set_dr_msg_cb(native.ptr(), Some(delivered_cb));
            rd::rd_kafka_conf_set_error_cb(native.ptr(), Some(error_cb));
            rd::rd_kafka_conf_set_log_cb(native.ptr(), Some(log_cb));
        }
        let client = Arc::new(Client::new(
            config,
            native,
            RDKafkaType::RD_KAFKA_PRODUCER,
            guard,
        )?);
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_client, thread_stop) = (client.clone(), stop.clone());
        std::thread::Builder::new()
            .name("kafka-producer".into())
            .spawn(move || serve(thread_client, thread_stop))
            .map_err(|err| KafkaError::ClientCreation(err.to_string()))?;
        Ok(GuardedProducer { client, stop })
    }

    /// The underlying client (metadata).
    pub fn client(&self) -> &Arc<Client<Guard>> {
        &self.client
    }

    /// What librdkafka reported.
    pub fn recorder(&self) -> &Recorder {
        &self.client.context().recorder
    }

    /// Queues one record; its acknowledgement arrives on the returned [`Delivery`].
    pub fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<Delivery, KafkaError> {
        let topic = std::ffi::CString::new(topic)
            .map_err(|_| KafkaError::MessageProduction(RDKafkaErrorCode::InvalidArgument))?;
        let (tx, rx) = oneshot::channel::<DeliveryResult>();
        let opaque = Box::into_raw(Box::new(tx));
        // SAFETY: librdkafka copies topic, key, value and header bytes (MSG_F_COPY,
        // header_add copies); on success it owns `hdrs` and passes `opaque` back to
        // `delivered_cb` exactly once; on failure neither is taken and both are freed here.
        unsafe {
            let hdrs = rd::rd_kafka_headers_new(headers.len());
            for (name, value) in headers {
                rd::rd_kafka_header_add(
                    hdrs,
                    name.as_ptr().cast(),
                    name.len() as isize,
                    value.as_ptr().cast(),
                    value.len() as isize,
                );
            }
            let vu = |vtype, u| rd::rd_kafka_vu_t { vtype, u };
            let mem = |bytes: &[u8]| rd::rd_kafka_vu_s__bindgen_ty_1 {
                mem: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
                    ptr: bytes.as_ptr() as *mut c_void,
                    size: bytes.len(),
                },
            };
            use rd::rd_kafka_vtype_t as V;
            let vus = [
                vu(
                    V::RD_KAFKA_VTYPE_TOPIC,
                    rd::rd_kafka_vu_s__bindgen_ty_1 {
                        cstr: topic.as_ptr(),
                    },
                ),
                vu(V::RD_KAFKA_VTYPE_KEY, mem(key)),
                vu(V::RD_KAFKA_VTYPE_VALUE, mem(payload)),
                vu(
                    V::RD_KAFKA_VTYPE_HEADERS,
                    rd::rd_kafka_vu_s__bindgen_ty_1 { headers: hdrs },
                ),
                vu(
                    V::RD_KAFKA_VTYPE_MSGFLAGS,
                    rd::rd_kafka_vu_s__bindgen_ty_1 {
                        i: rd::RD_KAFKA_MSG_F_COPY,
                    },
                ),
                vu(
                    V::RD_KAFKA_VTYPE_OPAQUE,
                    rd::rd_kafka_vu_s__bindgen_ty_1 { ptr: opaque.cast() },
                ),
            ];
            let error = rd::rd_kafka_produceva(self.client.native_ptr(), vus.as_ptr(), vus.len());
            if !error.is_null() {
                let code = RDKafkaErrorCode::from(rd::rd_kafka_error_code(error));
                rd::rd_kafka_error_destroy(error);
                rd::rd_kafka_headers_destroy(hdrs);
                drop(Box::from_raw(opaque));
                return Err(KafkaError::MessageProduction(code));
            }
        }
        Ok(rx)
    }

    /// Drops every queued and in-flight record: their deliveries fail at once.
    pub fn purge(&self) {
        // SAFETY: a live client; non-blocking purge only enqueues the failed reports.
        unsafe {
            rd::rd_kafka_purge(
                self.client.native_ptr(),
                rd::RD_KAFKA_PURGE_F_QUEUE
                    | rd::RD_KAFKA_PURGE_F_INFLIGHT
                    | rd::RD_KAFKA_PURGE_F_NON_BLOCKING,
            );
        }
    }
}

impl Drop for GuardedProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// The producer's thread: serves callbacks until the producer is dropped, then fails what is
/// left (so every pending future completes and every opaque is freed) and destroys the client.
fn serve(client: Arc<Client<Guard>>, stop: Arc<AtomicBool>) {
    let rk = client.native_ptr();
    while !stop.load(Ordering::Acquire) {
        // SAFETY: `client` keeps the handle alive for this thread.
        unsafe { rd::rd_kafka_poll(rk, 100) };
    }
    // SAFETY: as above. A purge guarantees a report for every record; serving them frees
    // each record's opaque (librdkafka's destroy would drop unserved reports unfreed). Bounded,
    // in case a broker thread is stuck in a lookup.
    unsafe {
        rd::rd_kafka_purge(
            rk,
            rd::RD_KAFKA_PURGE_F_QUEUE | rd::RD_KAFKA_PURGE_F_INFLIGHT,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while rd::rd_kafka_outq_len(rk) > 0 && std::time::Instant::now() < deadline {
            rd::rd_kafka_poll(rk, 100);
        }
    }
    drop(client);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_list_holds_each_allowed_address_of_the_asked_family_and_frees_cleanly() {
        // SAFETY: zeroed hints are valid (AF_UNSPEC).
        let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
        hints.ai_socktype = libc::SOCK_STREAM;
        let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        let list = answer_list(&ips, 9092, &hints);
        let mut seen = Vec::new();
        let mut next = list;
        while !next.is_null() {
            // SAFETY: a list we built.
            let info = unsafe { &*next };
            let addr = match info.ai_family {
                libc::AF_INET => {
                    let sin = unsafe { &*info.ai_addr.cast::<libc::sockaddr_in>() };
                    format!(
                        "{}:{}",
                        std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                        u16::from_be(sin.sin_port)
                    )
                }
                _ => {
                    let sin6 = unsafe { &*info.ai_addr.cast::<libc::sockaddr_in6>() };
                    format!(
                        "[{}]:{}",
                        std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                        u16::from_be(sin6.sin6_port)
                    )
                }
            };
            seen.push(addr);
            next = info.ai_next;
        }
        assert_eq!(seen, ["127.0.0.1:9092", "[::1]:9092"]);
        unsafe { free_answers(list) };
        hints.ai_family = libc::AF_INET6;
        let list = answer_list(&ips, 9092, &hints);
        // SAFETY: a list we built.
        unsafe {
            assert_eq!((*list).ai_family, libc::AF_INET6);
            assert!((*list).ai_next.is_null());
            free_answers(list);
        }
    }
}
