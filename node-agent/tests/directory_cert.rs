//! Issue 17: every node key of a lab is certified at once — t of the authorities' FROST
//! shares sign the directory (`Directory::certified_message`), and an agent refuses to
//! start unless that signature verifies over the directory it was given.

use lightcone_agent::driver::check_directory_certificate;
use lightcone_core::config::{HierAddr, PeerInfo, Role};
use lightcone_core::directory::Directory;
use lightcone_core::trust::threshold::{dkg, sign, Share};
use rand::SeedableRng;

fn peers(n: u32, seed: u8) -> Vec<PeerInfo> {
    (0..n)
        .map(|i| PeerInfo {
            name: format!("t{i}"),
            id: i,
            addr: HierAddr {
                layer: 0,
                cluster: 0,
                cell: 0,
                tile: i as u16,
            },
            role: Role::Tile,
            public_key_hex: hex::encode(
                ed25519_dalek::SigningKey::from_bytes(&[seed.wrapping_add(i as u8); 32])
                    .verifying_key()
                    .as_bytes(),
            ),
            position_au: [0.0; 3],
        })
        .collect()
}

#[test]
fn a_directory_certified_by_the_authorities_passes_and_any_other_does_not() {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(17);
    let (shares, group) = dkg(&[1, 2, 3, 4, 5], 3, &mut rng).unwrap();
    let auth = hex::encode(group.key.as_bytes());
    let good = Directory::from_peers(&peers(6, 10)).unwrap();
    let signers: Vec<&Share> = [&shares[&1], &shares[&3], &shares[&5]].into();
    let cert = hex::encode(sign(&group, &signers, &good.certified_message(), &mut rng).unwrap());
    check_directory_certificate(&cert, Some(&auth), &good).unwrap();

    // One key swapped (a stolen or stale entry): refused, saying why.
    let mut swapped = peers(6, 10);
    swapped[4].public_key_hex = peers(6, 90)[4].public_key_hex.clone();
    let swapped = Directory::from_peers(&swapped).unwrap();
    let e = check_directory_certificate(&cert, Some(&auth), &swapped).unwrap_err();
    assert!(
        e.contains("does not verify over this directory of 6 nodes"),
        "{e}"
    );
    // A renamed node, or one more node: another directory, refused.
    let mut renamed = peers(6, 10);
    renamed[2].name = "intruder".into();
    assert!(check_directory_certificate(
        &cert,
        Some(&auth),
        &Directory::from_peers(&renamed).unwrap()
    )
    .is_err());
    assert!(check_directory_certificate(
        &cert,
        Some(&auth),
        &Directory::from_peers(&peers(7, 10)).unwrap()
    )
    .is_err());
    // Fewer than t authorities cannot certify.
    assert!(sign(
        &group,
        &[&shares[&2], &shares[&4]],
        &good.certified_message(),
        &mut rng
    )
    .is_err());
    // Signed by another group: refused.
    let (other, other_group) = dkg(&[1, 2, 3], 2, &mut rng).unwrap();
    let forged = hex::encode(
        sign(
            &other_group,
            &[&other[&1], &other[&2]],
            &good.certified_message(),
            &mut rng,
        )
        .unwrap(),
    );
    assert!(check_directory_certificate(&forged, Some(&auth), &good).is_err());
    // Malformed, or no authorities' key to check it with: refused with the reason.
    assert!(check_directory_certificate("zz", Some(&auth), &good).is_err());
    assert!(check_directory_certificate(&cert[..64], Some(&auth), &good)
        .unwrap_err()
        .contains("64 bytes"));
    assert!(check_directory_certificate(&cert, None, &good)
        .unwrap_err()
        .contains("authorities_key_hex"));
}
