//! Which interface the kernel sends a peer's packets out of: one RTM_GETROUTE query over
//! rtnetlink (what `ip route get ADDR` asks). The agent instruments exactly those interfaces by
//! default. Neither "the interface holding the advertised address" (the demo advertises an
//! address on `lo` and reaches its neighbours over two veths) nor "every interface" (a bridge
//! and its ports, a bond and its slaves would count each packet twice, and a host has
//! hundreds of pod veths) would be right.
use std::net::IpAddr;
use std::os::fd::AsRawFd as _;
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, setsockopt, socket,
    sockopt,
};
use nix::sys::time::TimeVal;

use crate::DatapathError;

// From linux/netlink.h and linux/rtnetlink.h (the libc crate's types for them differ by
// target; these are the ABI values).
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTN_UNICAST: u8 = 1;
const NLMSG_HEADER: usize = 16;
const RTMSG: usize = 12;

/// How the kernel routes packets to an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Egress {
    /// Out of the interface with this index.
    Interface(u32),
    /// Not out of any interface: a local address, a blackhole or an unreachable route.
    NotForwarded,
    /// No route at all (ENETUNREACH and friends).
    NoRoute,
}

/// The RTM_GETROUTE request for `destination`.
pub(crate) fn request(destination: IpAddr, seq: u32) -> Vec<u8> {
    let (family, address): (u8, Vec<u8>) = match destination.to_canonical() {
        IpAddr::V4(v4) => (libc::AF_INET as u8, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6 as u8, v6.octets().to_vec()),
    };
    let attribute_len = 4 + address.len();
    let total = NLMSG_HEADER + RTMSG + attribute_len;
    let mut message = Vec::with_capacity(total);
    message.extend_from_slice(&(total as u32).to_ne_bytes());
    message.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
    message.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    message.extend_from_slice(&seq.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32).
    message.extend_from_slice(&[family, (address.len() * 8) as u8, 0, 0, 0, 0, 0, 0]);
    message.extend_from_slice(&0u32.to_ne_bytes());
    // struct rtattr RTA_DST; 4- and 16-byte addresses keep it 4-byte aligned.
    message.extend_from_slice(&(attribute_len as u16).to_ne_bytes());
    message.extend_from_slice(&RTA_DST.to_ne_bytes());
    message.extend_from_slice(&address);
    message
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Parses the kernel's answer to [`request`]: the route's output interface, or why there is
/// none. Malformed input is an error, never a panic.
pub(crate) fn parse_reply(reply: &[u8]) -> Result<Egress, String> {
    let length = u32_at(reply, 0).ok_or("a truncated netlink header")? as usize;
    let kind = u16_at(reply, 4).ok_or("a truncated netlink header")?;
    let message = reply
        .get(..length)
        .filter(|_| length >= NLMSG_HEADER)
        .ok_or(format!("a netlink message of {length} bytes in {}", reply.len()))?;
    match kind {
        NLMSG_ERROR => {
            let errno = u32_at(message, NLMSG_HEADER).ok_or("a truncated netlink error")? as i32;
            match -errno {
                libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENETDOWN | libc::ESRCH => Ok(Egress::NoRoute),
                // An unreachable, prohibit or blackhole route answers with its own errno.
                libc::EACCES | libc::EINVAL => Ok(Egress::NotForwarded),
                other => Err(std::io::Error::from_raw_os_error(other).to_string()),
            }
        }
        RTM_NEWROUTE => {
            let route_type = *message.get(NLMSG_HEADER + 7).ok_or("a truncated route message")?;
            if route_type != RTN_UNICAST {
                return Ok(Egress::NotForwarded);
            }
            let mut at = NLMSG_HEADER + RTMSG;
            while at + 4 <= message.len() {
                let attribute_len = usize::from(u16_at(message, at).unwrap_or(0));
                let attribute_type = u16_at(message, at + 2).unwrap_or(0);
                if attribute_len < 4 {
                    return Err(format!("a route attribute of {attribute_len} bytes"));
                }
                if attribute_type == RTA_OIF {
                    let index = u32_at(message, at + 4).ok_or("a truncated RTA_OIF")?;
                    return Ok(Egress::Interface(index));
                }
                at += attribute_len.div_ceil(4) * 4;
            }
            Ok(Egress::NotForwarded)
        }
        other => Err(format!("an unexpected netlink message type {other}")),
    }
}

fn route_error(detail: impl std::fmt::Display) -> DatapathError {
    DatapathError::Kernel {
        op: "look up a route",
        detail: detail.to_string(),
    }
}

/// The interface the kernel of the calling thread's network namespace sends packets for
/// `destination` out of, or None when it sends them out of none (no route, a local address).
pub fn route_interface(destination: IpAddr) -> Result<Option<String>, DatapathError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(route_error)?;
    // The kernel answers at once; the timeout only keeps a broken netlink from hanging the agent.
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &TimeVal::from(libc::timeval {
            tv_sec: Duration::from_secs(1).as_secs() as libc::time_t,
            tv_usec: 0,
        }),
    )
    .map_err(route_error)?;
    let message = request(destination, 1);
    sendto(
        fd.as_raw_fd(),
        &message,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(route_error)?;
    let mut reply = vec![0u8; 4096];
    let length = recv(fd.as_raw_fd(), &mut reply, MsgFlags::empty()).map_err(route_error)?;
    match parse_reply(&reply[..length]).map_err(route_error)? {
        Egress::Interface(index) => nix::net::if_::if_indextoname(index)
            .map(|name| Some(name.to_string_lossy().into_owned()))
            .map_err(route_error),
        Egress::NotForwarded | Egress::NoRoute => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut message = Vec::new();
        message.extend_from_slice(&((NLMSG_HEADER + body.len()) as u32).to_ne_bytes());
        message.extend_from_slice(&kind.to_ne_bytes());
        message.extend_from_slice(&[0; 10]);
        message.extend_from_slice(body);
        message
    }

    fn route(route_type: u8, attributes: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![libc::AF_INET as u8, 32, 0, 0, 254, 0, 0, route_type, 0, 0, 0, 0];
        for (kind, data) in attributes {
            body.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
            body.extend_from_slice(&kind.to_ne_bytes());
            body.extend_from_slice(data);
            body.resize(body.len().div_ceil(4) * 4, 0);
        }
        reply(RTM_NEWROUTE, &body)
    }

    #[test]
    fn the_request_asks_for_one_host_route_in_the_address_family() {
        let v4 = request("198.18.0.2".parse().unwrap(), 7);
        assert_eq!(v4.len(), 16 + 12 + 8);
        assert_eq!(u32_at(&v4, 0), Some(36));
        assert_eq!(u16_at(&v4, 4), Some(RTM_GETROUTE));
        assert_eq!((v4[16], v4[17]), (libc::AF_INET as u8, 32));
        assert_eq!(&v4[32..36], &[198, 18, 0, 2]);
        // An IPv4-mapped peer (how the maps key IPv4) is looked up as IPv4.
        let mapped = request("::ffff:198.18.0.2".parse().unwrap(), 7);
        assert_eq!(mapped, v4);
        let v6 = request("2001:db8::1".parse().unwrap(), 7);
        assert_eq!(
            (v6[16], v6[17], v6.len()),
            (libc::AF_INET6 as u8, 128, 16 + 12 + 20)
        );
    }

    #[test]
    fn the_output_interface_is_found_among_the_attributes() {
        let table = 254u32.to_ne_bytes();
        let gateway = [198, 18, 0, 9];
        let oif = 7u32.to_ne_bytes();
        let answer = route(RTN_UNICAST, &[(15, &table), (5, &gateway), (RTA_OIF, &oif)]);
        assert_eq!(parse_reply(&answer), Ok(Egress::Interface(7)));
        // A local address is routed through `lo`, but out of no interface.
        let local = route(2, &[(RTA_OIF, &1u32.to_ne_bytes())]);
        assert_eq!(parse_reply(&local), Ok(Egress::NotForwarded));
    }

    #[test]
    fn errors_and_garbage_are_told_apart() {
        let unreachable = reply(NLMSG_ERROR, &(-libc::ENETUNREACH).to_ne_bytes());
        assert_eq!(parse_reply(&unreachable), Ok(Egress::NoRoute));
        let other = reply(NLMSG_ERROR, &(-libc::ENOMEM).to_ne_bytes());
        assert!(parse_reply(&other).is_err());
        assert!(parse_reply(&[1, 2, 3]).is_err());
        let mut bad_length = route(RTN_UNICAST, &[]);
        bad_length[0] = 200;
        assert!(parse_reply(&bad_length).is_err());
        let zero_attribute = route(RTN_UNICAST, &[])
            .into_iter()
            .chain([0, 0, 0, 0])
            .collect::<Vec<_>>();
        let mut zero_attribute = zero_attribute;
        let len = zero_attribute.len() as u32;
        zero_attribute[..4].copy_from_slice(&len.to_ne_bytes());
        assert!(
            parse_reply(&zero_attribute).is_err(),
            "no endless loop on a zero-length attribute"
        );
    }
}
