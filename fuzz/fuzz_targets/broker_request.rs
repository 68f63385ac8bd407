//! Fuzzes the broker's wire format as an untrusted peer sends it: a request line (any local
//! user can connect to the socket) and, for the client side, a response with the number of fds
//! that arrived. No input may panic; what is accepted must be what encodes back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfioctl::broker::protocol::{
    encode_request, encode_response, parse_request, parse_response, Response, MAX_REQUEST,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = parse_request(data) {
        assert!(data.len() <= MAX_REQUEST);
        assert!(req.ask().is_ok());
        let line = encode_request(&req);
        assert_eq!(parse_request(&line[..line.len() - 1]).as_ref(), Ok(&req));
    }
    // The first byte says how many fds "arrived" with the response.
    let (fds, bytes) = match data.split_first() {
        Some((n, rest)) => (usize::from(*n), rest),
        None => (0, data),
    };
    if let Ok(resp) = parse_response(bytes, fds) {
        if let Response::Granted(d) = &resp {
            assert!(d.fd_count() <= fds);
        }
        if let Ok(again) = encode_response(&resp) {
            assert_eq!(parse_response(&again, fds).as_ref(), Ok(&resp));
        }
    }
});
