//! Classic pcap files (libpcap format): a reader and a writer, Ethernet link type.
//!
//! The reader accepts both byte orders and both microsecond and nanosecond magic;
//! a damaged file yields an error naming the offset, never a panic.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::Error;

/// Largest record accepted (bytes); a bigger length means a damaged file.
pub const MAX_RECORD: u32 = 262_144;
/// `LINKTYPE_ETHERNET`.
pub const LINKTYPE_ETHERNET: u32 = 1;

const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;

/// Reads frames from a pcap stream.
pub struct PcapReader<R> {
    r: R,
    swap: bool,
    nanos: bool,
    offset: u64,
}

impl PcapReader<BufReader<File>> {
    /// Opens a capture file.
    pub fn open(path: &Path) -> Result<Self, Error> {
        Self::new(BufReader::with_capacity(1 << 16, File::open(path)?))
    }
}

impl<R: Read> PcapReader<R> {
    /// Reads the global header.
    pub fn new(mut r: R) -> Result<Self, Error> {
        let mut h = [0u8; 24];
        r.read_exact(&mut h)?;
        let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let (swap, nanos) = match magic {
            MAGIC_US => (false, false),
            MAGIC_NS => (false, true),
            m if m.swap_bytes() == MAGIC_US => (true, false),
            m if m.swap_bytes() == MAGIC_NS => (true, true),
            m => return Err(Error::PcapBadMagic(m)),
        };
        let rd = |b: &[u8]| {
            let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if swap {
                v.swap_bytes()
            } else {
                v
            }
        };
        let link = rd(&h[20..24]) & 0x0fff_ffff;
        if link != LINKTYPE_ETHERNET {
            return Err(Error::PcapLinkType(link));
        }
        Ok(PcapReader { r, swap, nanos, offset: 24 })
    }

    fn u32_at(&self, b: &[u8]) -> u32 {
        let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if self.swap {
            v.swap_bytes()
        } else {
            v
        }
    }

    /// The next frame and its timestamp in nanoseconds since the epoch; `None` at a
    /// clean end of file.
    pub fn next_frame(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, Error> {
        let mut h = [0u8; 16];
        let mut got = 0;
        while got < 16 {
            let n = self.r.read(&mut h[got..])?;
            if n == 0 {
                return if got == 0 { Ok(None) } else { Err(Error::PcapTruncated(self.offset)) };
            }
            got += n;
        }
        let sec = u64::from(self.u32_at(&h[0..4]));
        let frac = u64::from(self.u32_at(&h[4..8]));
        let incl = self.u32_at(&h[8..12]);
        if incl > MAX_RECORD {
            return Err(Error::PcapBadRecord { offset: self.offset, len: incl });
        }
        buf.clear();
        buf.resize(incl as usize, 0);
        self.r.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Error::PcapTruncated(self.offset)
            } else {
                Error::PcapIo(e)
            }
        })?;
        self.offset += 16 + u64::from(incl);
        let ns = sec * 1_000_000_000 + if self.nanos { frac } else { frac * 1000 };
        Ok(Some(ns))
    }
}

/// Writes frames to a pcap stream (microsecond timestamps, Ethernet); the
/// header and records are encoded by the `pcap-file` crate.
pub struct PcapWriter<W: Write> {
    w: W,
}

impl PcapWriter<BufWriter<File>> {
    /// Creates (truncates) a capture file.
    /// A failure names the file.
    pub fn create(path: &Path) -> Result<Self, Error> {
        let io = |source| Error::Io { path: path.display().to_string(), source };
        let file = File::create(path).map_err(io)?;
        Self::new(BufWriter::with_capacity(1 << 16, file))
    }
}

fn io_err(e: pcap_file::PcapError) -> io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

const SNAPLEN: u32 = 65535;

impl<W: Write> PcapWriter<W> {
    /// Writes the global header.
    pub fn new(mut w: W) -> Result<Self, Error> {
        let header = pcap_file::pcap::PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: SNAPLEN,
            datalink: pcap_file::DataLink::ETHERNET,
            ts_resolution: pcap_file::TsResolution::MicroSecond,
            endianness: pcap_file::Endianness::Little,
        };
        header.write_to(&mut w).map_err(io_err)?;
        Ok(PcapWriter { w })
    }

    /// Appends one frame stamped `ts_ns` nanoseconds since the epoch.
    pub fn write_frame(&mut self, ts_ns: u64, frame: &[u8]) -> Result<(), Error> {
        let ts = std::time::Duration::from_nanos(ts_ns);
        pcap_file::pcap::PcapPacket::new(ts, frame.len() as u32, frame)
            .write_to::<_, byteorder_slice::LittleEndian>(
                &mut self.w,
                pcap_file::TsResolution::MicroSecond,
                SNAPLEN,
            )
            .map(|_| ())
            .map_err(|e| Error::PcapIo(io_err(e)))
    }

    /// Flushes buffered records.
    pub fn flush(&mut self) -> Result<(), Error> {
        Ok(self.w.flush()?)
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write_frame(1_500_000_123_000, &[1, 2, 3]).unwrap();
        w.write_frame(2_000_000_000, &[9; 70]).unwrap();
        let bytes = w.into_inner();
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        let mut buf = Vec::new();
        assert_eq!(r.next_frame(&mut buf).unwrap(), Some(1_500_000_123_000));
        assert_eq!(buf, vec![1, 2, 3]);
        assert_eq!(r.next_frame(&mut buf).unwrap(), Some(2_000_000_000));
        assert_eq!(buf.len(), 70);
        assert_eq!(r.next_frame(&mut buf).unwrap(), None);
    }

    #[test]
    fn damaged_files_are_errors() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write_frame(0, &[7; 40]).unwrap();
        let bytes = w.into_inner();
        // Cut anywhere inside the record: an error, never a panic or a short frame.
        for cut in 25..bytes.len() {
            let mut r = PcapReader::new(&bytes[..cut]).unwrap();
            assert!(r.next_frame(&mut Vec::new()).is_err(), "cut at {cut}");
        }
        assert!(matches!(PcapReader::new(&[0u8; 24][..]), Err(Error::PcapBadMagic(0))));
        let mut big = bytes.clone();
        big[32..36].copy_from_slice(&(MAX_RECORD + 1).to_le_bytes());
        let mut r = PcapReader::new(&big[..]).unwrap();
        assert!(matches!(r.next_frame(&mut Vec::new()), Err(Error::PcapBadRecord { offset: 24, .. })));
        let mut swapped = bytes.clone();
        swapped[0..4].copy_from_slice(&MAGIC_US.to_be_bytes());
        assert!(PcapReader::new(&swapped[..]).is_err(), "big-endian header fields now wrong: link type");
    }
}
