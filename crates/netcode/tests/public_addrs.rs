//! Addresses learned after start (e.g. the host port Agones allocated) are accepted in
//! connect tokens once added, and not before.

mod common;

use common::*;
use tickwire_netcode::*;

#[test]
fn token_for_an_added_address_is_accepted() {
    let allocated = addr("10.0.0.7:7345");
    let mut server = Server::new(server_config(4));
    let t = token(&TokenSpec {
        addrs: &[allocated],
        ..TokenSpec::default()
    });
    let now = start_now();
    let mut client = Client::new(&t, now).unwrap();
    let mut request = Vec::new();
    client.update(
        now,
        &mut |to, b| {
            assert_eq!(to, allocated);
            request = b.to_vec();
        },
        &mut |_| {},
    );
    assert_eq!(request.len(), 1078, "a connection request");

    let mut replies = 0;
    server.handle_packet(
        now,
        client_addr(0).into(),
        &request,
        &mut |_, _| replies += 1,
        &mut |_| {},
    );
    assert_eq!(replies, 0);
    assert_eq!(
        server.stats().drops[DropReason::TokenWrongServer.index()],
        1
    );

    assert!(server.add_public_addr(allocated));
    assert!(server.add_public_addr(allocated), "adding twice is fine");
    server.handle_packet(
        now,
        client_addr(0).into(),
        &request,
        &mut |_, b| {
            assert!(
                b.len() < request.len(),
                "challenge smaller than the request"
            );
            replies += 1;
        },
        &mut |_| {},
    );
    assert_eq!(replies, 1, "challenged once the address is ours");
}

#[test]
fn added_addresses_are_bounded() {
    let mut server = Server::new(server_config(1));
    let mut added = 0;
    for port in 1..=100u16 {
        if server.add_public_addr(addr(&format!("10.0.0.1:{port}"))) {
            added += 1;
        }
    }
    assert!(added <= MAX_PUBLIC_ADDRS);
    assert!(added >= MAX_PUBLIC_ADDRS - 1);
}
