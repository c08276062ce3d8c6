//! UdpClient (on the shared driver) against a netcode `Server` on a UDP socket on 127.0.0.1,
//! in a thread. No timing assertions: every wait is a 60 s hang guard on an outcome.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tickwire_client::{ClientState, UdpClient};
use tickwire_netcode::{
    generate_connect_token, DisconnectReason, Now, Server, ServerConfig, ServerEvent, TokenParams,
    USER_DATA_BYTES,
};

const PROTOCOL_ID: u64 = 0x7469_636b_7769_7265;
const GUARD: Duration = Duration::from_secs(60);

fn unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn udp_client_connects_sends_inputs_and_disconnects() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let (seen_tx, seen) = mpsc::channel();
    let server = thread::spawn(move || {
        let start = Instant::now();
        let now = || Now {
            mono: start.elapsed(),
            unix_secs: unix(),
        };
        let mut netcode = Server::new(ServerConfig {
            protocol_id: PROTOCOL_ID,
            private_key: [7; 32],
            max_clients: 2,
            public_addrs: vec![addr],
        });
        let mut buf = [0u8; 1500];
        while !stop2.load(Ordering::Relaxed) {
            let mut tx = |to: tickwire_netcode::Peer, b: &[u8]| {
                let _ = socket.send_to(b, to.addr);
            };
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                netcode.handle_packet(now(), from.into(), &buf[..n], &mut tx, &mut |e| match e {
                    ServerEvent::Payload { data, .. } => {
                        let _ = seen_tx.send(Ok(data.to_vec()));
                    }
                    ServerEvent::Disconnected { reason, .. } => {
                        let _ = seen_tx.send(Err(reason));
                    }
                    ServerEvent::Connected { .. } => {}
                });
            }
            netcode.update(now(), &mut tx, &mut |_| {});
        }
    });

    let token = generate_connect_token(&TokenParams {
        protocol_id: PROTOCOL_ID,
        client_id: 1,
        create_unix_secs: unix(),
        expire_secs: 120,
        timeout_secs: 60,
        server_addrs: &[addr],
        user_data: [0; USER_DATA_BYTES],
        private_key: &[7; 32],
    })
    .unwrap();
    let mut client = UdpClient::connect(&token, GUARD).expect("connect");
    assert_eq!(client.state(), ClientState::Connected);
    assert!(client.local_addr().unwrap().ip().is_loopback());

    client.send_input(&[4, 5, 6]).unwrap();
    let payload = seen
        .recv_timeout(GUARD)
        .expect("hang guard")
        .expect("a payload");
    match tickwire_proto::decode_client(&payload, 3) {
        Ok(tickwire_proto::ClientMessage::Input(inputs)) => {
            assert_eq!(inputs.frames().last().unwrap(), (1, &[4u8, 5, 6][..]));
        }
        other => panic!("{other:?}"),
    }
    client.disconnect();
    loop {
        if let Err(reason) = seen.recv_timeout(GUARD).expect("hang guard") {
            assert_eq!(reason, DisconnectReason::ClientDisconnected);
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}
