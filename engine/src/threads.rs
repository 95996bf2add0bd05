//! The engine's worker threads. Native builds use a rayon pool whose size the
//! caller sets; wasm runs everything on the calling thread.

/// A fixed-size pool of worker threads (one per requested thread).
pub struct Threads {
    #[cfg(not(target_arch = "wasm32"))]
    pool: rayon::ThreadPool,
    n: usize,
}

impl Threads {
    /// `n_threads == 0` means one per available core.
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
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .thread_name(|i| format!("main-engine-{i}"))
                .build()
                .expect("failed to spawn worker threads");
            Threads { pool, n }
        }
        #[cfg(target_arch = "wasm32")]
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
        #[cfg(not(target_arch = "wasm32"))]
        {
            if n_tasks <= 1 || self.n == 1 {
                (0..n_tasks).for_each(f);
                return;
            }
            use rayon::prelude::*;
            self.pool
                .install(|| (0..n_tasks).into_par_iter().for_each(f));
        }
        #[cfg(target_arch = "wasm32")]
        (0..n_tasks).for_each(f);
    }
}

impl Threads {
    /// Runs `f(i, &mut items[i])` for every item, spread over the pool. The
    /// items are usually disjoint `&mut` slices of one output buffer, so
    /// workers write their results in place without locks or `unsafe`.
    pub fn for_each_mut<T: Send>(&self, items: &mut [T], f: impl Fn(usize, &mut T) + Sync + Send) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            if items.len() <= 1 || self.n == 1 {
                items.iter_mut().enumerate().for_each(|(i, t)| f(i, t));
                return;
            }
            use rayon::prelude::*;
            self.pool
                .install(|| items.par_iter_mut().enumerate().for_each(|(i, t)| f(i, t)));
        }
        #[cfg(target_arch = "wasm32")]
        items.iter_mut().enumerate().for_each(|(i, t)| f(i, t));
    }
}
