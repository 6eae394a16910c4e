//! A tiny authoritative DNS server on loopback UDP: A records for configured names,
//! empty NOERROR for their AAAA, NXDOMAIN for everything else. It records every
//! question so tests can check SafeGate's DNS cache.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

pub struct FakeDns {
    pub addr: SocketAddr,
    questions: Arc<Mutex<Vec<(String, u16)>>>,
    task: JoinHandle<()>,
}

impl FakeDns {
    pub async fn start(records: &[(&str, Ipv4Addr)]) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let records: HashMap<String, Ipv4Addr> = records
            .iter()
            .map(|(name, ip)| (name.to_ascii_lowercase(), *ip))
            .collect();
        let questions = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&questions);
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                if let Some((reply, name, qtype)) = answer(&buf[..len], &records) {
                    seen.lock().unwrap().push((name, qtype));
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        Self {
            addr,
            questions,
            task,
        }
    }

    /// Questions asked so far for `name` with type `qtype` (1 = A, 28 = AAAA).
    pub fn asked(&self, name: &str, qtype: u16) -> usize {
        self.questions
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, t)| n == name && *t == qtype)
            .count()
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(query: &[u8], records: &HashMap<String, Ipv4Addr>) -> Option<(Vec<u8>, String, u16)> {
    if query.len() < 12 {
        return None;
    }
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(pos..pos + len)?).to_ascii_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*query.get(pos)?, *query.get(pos + 1)?]);
    let question_end = pos + 4;
    let name = labels.join(".");
    let mut reply = query.get(..question_end)?.to_vec();
    // QR=1, opcode copied, AA=1, RD copied; RA=1.
    reply[2] = 0x84 | (query[2] & 0x01);
    reply[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
    match records.get(&name) {
        Some(ip) => {
            reply[3] = 0x80;
            if qtype == 1 {
                reply[7] = 1;
                reply.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0x0E, 0x10, 0, 4]);
                reply.extend_from_slice(&ip.octets());
            }
        }
        None => reply[3] = 0x83,
    }
    Some((reply, name, qtype))
}
