//! A DNS server of the test's own on loopback (UDP): it answers TXT questions from a table
//! the test fills, and NXDOMAIN for any other name.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::TXT;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

/// TXT records by lowercase name (without the trailing dot), each record's strings.
type Zone = Arc<Mutex<HashMap<String, Vec<Vec<String>>>>>;

pub struct TestDns {
    addr: SocketAddr,
    zone: Zone,
    task: tokio::task::JoinHandle<()>,
}

impl TestDns {
    /// Listens on a free loopback port.
    pub async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone: Zone = Arc::default();
        let task = tokio::spawn(serve(socket, zone.clone()));
        Self { addr, zone, task }
    }

    /// The address to put in `dns.nameservers`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a TXT record at `name` made of these strings (a long value is several).
    pub fn add_txt(&self, name: &str, strings: &[&str]) {
        self.zone
            .lock()
            .unwrap()
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(strings.iter().map(|s| (*s).to_owned()).collect());
    }

    /// Removes every record at `name`.
    pub fn remove(&self, name: &str) {
        self.zone.lock().unwrap().remove(&name.to_ascii_lowercase());
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(socket: UdpSocket, zone: Zone) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
        answer.metadata.recursion_desired = query.metadata.recursion_desired;
        answer.metadata.recursion_available = true;
        answer.metadata.authoritative = true;
        answer.add_queries(query.queries.clone());
        for question in &query.queries {
            let name = question.name().to_ascii();
            let key = name.trim_end_matches('.').to_ascii_lowercase();
            let records = zone.lock().unwrap().get(&key).cloned();
            match records {
                None => answer.metadata.response_code = ResponseCode::NXDomain,
                Some(records) if question.query_type() == RecordType::TXT => {
                    for strings in records {
                        answer.add_answer(Record::from_rdata(
                            question.name().clone(),
                            60,
                            RData::TXT(TXT::new(strings)),
                        ));
                    }
                }
                // The name exists but has no record of that type: NOERROR, no answer.
                Some(_) => {}
            }
        }
        if let Ok(bytes) = answer.to_vec() {
            let _ = socket.send_to(&bytes, peer).await;
        }
    }
}
