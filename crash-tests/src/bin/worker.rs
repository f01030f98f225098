//! A crash-test worker: runs transfers `w{worker}-0 … w{worker}-{n-1}` of the
//! reference bank-transfer workflow and prints `acked <id> <ok>` (flushed)
//! after each completed invoke. Meant to be SIGKILLed at any moment and
//! restarted with the same arguments.
//!
//! Usage: `worker STORE_URL NAMESPACE WORKER_ID TRANSFERS ACCOUNTS`
//! (`STORE_URL`: `sqlite://PATH` or `postgres://…`).

use std::io::Write;
use std::time::Duration;

use conformance_tests::workflows::TransferResult;
use crash_tests::{instance_id, open_store, runtime, transfer_input};

fn usage() -> ! {
    eprintln!("usage: worker STORE_URL NAMESPACE WORKER_ID TRANSFERS ACCOUNTS");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, namespace, worker, transfers, accounts] = args.as_slice() else { usage() };
    let (Ok(worker), Ok(transfers), Ok(accounts)) = (worker.parse(), transfers.parse(), accounts.parse()) else {
        usage()
    };
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let code = tokio.block_on(async {
        let store = match open_store(url, namespace).await {
            Ok(store) => store,
            Err(e) => {
                eprintln!("cannot open the store: {e:?}");
                return 3;
            }
        };
        let rt = runtime(store);
        let mut out = std::io::stdout().lock();
        for n in 0..transfers {
            let id = instance_id(worker, n);
            let input = transfer_input(worker, n, accounts);
            // Transient failures (a busy store, an instance still leased by a
            // killed execution) are retried with the same id: a duplicate.
            let mut attempt = 0;
            let result = loop {
                attempt += 1;
                match rt.invoke::<_, TransferResult>("transfer", &input, Some(&id)).await {
                    Ok(result) => break result,
                    Err(e) if attempt < 20 => {
                        eprintln!("{id}: attempt {attempt} failed, retrying: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => {
                        eprintln!("{id}: giving up after {attempt} attempts: {e:?}");
                        return 4;
                    }
                }
            };
            if writeln!(out, "acked {id} {}", result.ok).and_then(|()| out.flush()).is_err() {
                return 5;
            }
        }
        0
    });
    std::process::exit(code)
}
