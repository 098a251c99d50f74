//! Stdin and stdout for the relay without a thread hop per chunk: when they are pipes or
//! sockets (as under ssh's `ProxyCommand`) they are made non-blocking and driven by the
//! runtime's reactor directly, so a read from ssh, its TLS encryption and the send to the
//! proxy happen on one thread. Anything else (a terminal, a file) falls back to tokio's
//! `stdin`/`stdout`, which read and write on blocking threads. The original file status
//! flags are put back when the handle is dropped.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use rustix::fs::{FileType, OFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A pipe or socket inherited as a standard stream, non-blocking, on the reactor.
pub(crate) struct PipeFd {
    fd: AsyncFd<OwnedFd>,
    original: OFlags,
}

impl PipeFd {
    /// `fd` as a [`PipeFd`], or `None` when it is not a pipe or socket (or the reactor refuses
    /// it): then the caller uses tokio's blocking-thread streams.
    pub(crate) fn new(fd: BorrowedFd<'_>) -> Option<Self> {
        let st = rustix::fs::fstat(fd).ok()?;
        if !matches!(
            FileType::from_raw_mode(st.st_mode),
            FileType::Fifo | FileType::Socket
        ) {
            return None;
        }
        let owned = rustix::io::dup(fd).ok()?;
        let original = rustix::fs::fcntl_getfl(&owned).ok()?;
        rustix::fs::fcntl_setfl(&owned, original | OFlags::NONBLOCK).ok()?;
        // `AsyncFd::new` is deprecated for types whose `as_raw_fd` may change or close under
        // it; an `OwnedFd` it owns can do neither, which is exactly what the unsafe
        // `register` asks callers to promise, so the safe constructor is sound here.
        #[allow(deprecated)]
        let registered = AsyncFd::new(owned);
        match registered {
            Ok(fd) => Some(Self { fd, original }),
            Err(e) => {
                tracing::debug!(error = %e, "standard stream not pollable; using blocking threads");
                None
            }
        }
    }
}

impl Drop for PipeFd {
    fn drop(&mut self) {
        let _ = rustix::fs::fcntl_setfl(self.fd.get_ref().as_fd(), self.original);
    }
}

impl AsyncRead for PipeFd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                rustix::io::read(fd.get_ref(), &mut *unfilled).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => {}
            }
        }
    }
}

impl AsyncWrite for PipeFd {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| rustix::io::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => {}
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A standard stream: on the reactor when possible, else tokio's blocking-thread one.
pub enum StdStream<T> {
    /// A pipe or socket, non-blocking on the reactor.
    #[allow(private_interfaces)] // the variant's type is an implementation detail
    Pipe(PipeFd),
    /// A terminal or file, through tokio's blocking threads.
    Blocking(T),
}

/// This process's stdin for the relay.
pub fn stdin() -> StdStream<tokio::io::Stdin> {
    match PipeFd::new(io::stdin().as_fd()) {
        Some(p) => StdStream::Pipe(p),
        None => StdStream::Blocking(tokio::io::stdin()),
    }
}

/// This process's stdout for the relay.
pub fn stdout() -> StdStream<tokio::io::Stdout> {
    match PipeFd::new(io::stdout().as_fd()) {
        Some(p) => StdStream::Pipe(p),
        None => StdStream::Blocking(tokio::io::stdout()),
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StdStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Pipe(p) => Pin::new(p).poll_read(cx, buf),
            Self::Blocking(t) => Pin::new(t).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StdStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Pipe(p) => Pin::new(p).poll_write(cx, data),
            Self::Blocking(t) => Pin::new(t).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Pipe(p) => Pin::new(p).poll_flush(cx),
            Self::Blocking(t) => Pin::new(t).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Pipe(p) => Pin::new(p).poll_shutdown(cx),
            Self::Blocking(t) => Pin::new(t).poll_shutdown(cx),
        }
    }
}
