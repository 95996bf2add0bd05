//! The engine's worker threads. Native builds use a rayon pool whose size the
//! caller sets. wasm32 built with atomics (the browser's threaded build) uses
//! rayon's global pool, which the page starts once from Web Workers sharing
//! the module's memory (wasm-bindgen-rayon's `initThreadPool`); other wasm
//! builds run everything on the calling thread.
//!
//! How work is split never changes a result: each task writes its own
//! outputs, computed in the same order whatever the thread count.

/// A fixed-size pool of worker threads (one per requested thread).
pub struct Threads {
    /// `None` for one thread: everything runs on the caller's thread, so a
    /// one-thread `Threads` (the scorer's lanes make one per call) costs
    /// no thread.
    #[cfg(not(target_arch = "wasm32"))]
    pool: Option<rayon::ThreadPool>,
    n: usize,
}

impl Threads {
    /// `n_threads == 0` means one per available core (native) or every thread
    /// of the page's pool (threaded wasm).
    pub fn new(n_threads: usize) -> Threads {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let n = if n_threads == 0 {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            } else {
                n_threads
            };
            let pool = (n > 1).then(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("main-engine-{i}"))
                    .build()
                    .expect("failed to spawn worker threads")
            });
            Threads { pool, n }
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
        {
            // One thread must not touch the global pool: asking rayon for it
            // before the page has started its workers would fix it at one
            // thread for good. Otherwise use the pool as the page made it
            // (threads cannot be spawned from here).
            let n = match n_threads {
                1 => 1,
                0 => rayon::current_num_threads(),
                n => n.min(rayon::current_num_threads()),
            };
            Threads { n }
        }
        #[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
        {
            let _ = n_threads;
            Threads { n: 1 }
        }
    }

    pub fn n_threads(&self) -> usize {
        self.n
    }

    /// Runs `f(task)` for every `task` in `0..n_tasks`, spread over the pool,
    /// and returns when all are done.
    pub fn for_each(&self, n_tasks: usize, f: impl Fn(usize) + Sync + Send) {
        #[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
        if n_tasks > 1 && self.n > 1 {
            use rayon::prelude::*;
            self.install(|| (0..n_tasks).into_par_iter().for_each(&f));
            return;
        }
        (0..n_tasks).for_each(f);
    }

    /// Runs `f(i, &mut items[i])` for every item, spread over the pool. The
    /// items are usually disjoint `&mut` slices of one output buffer, so
    /// workers write their results in place without locks or `unsafe`.
    pub fn for_each_mut<T: Send>(&self, items: &mut [T], f: impl Fn(usize, &mut T) + Sync + Send) {
        #[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
        if items.len() > 1 && self.n > 1 {
            use rayon::prelude::*;
            self.install(|| items.par_iter_mut().enumerate().for_each(|(i, t)| f(i, t)));
            return;
        }
        items.iter_mut().enumerate().for_each(|(i, t)| f(i, t));
    }

    /// Runs `op` inside this pool: the native pool, or the page's global one.
    #[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
    fn install(&self, op: impl FnOnce() + Send) {
        #[cfg(not(target_arch = "wasm32"))]
        match &self.pool {
            Some(pool) => pool.install(op),
            None => op(),
        }
        #[cfg(target_arch = "wasm32")]
        op();
    }
}
