//! Fetches a URL (the first argument; `http://127.0.0.1:8080/` by default) with this
//! thread's client for this runtime and prints the body.

use http_body_util::BodyExt;

/// GETs `url` with the default manager's client for this thread and runtime and returns
/// the response body as text.
pub async fn fetch(url: &str) -> Result<String, Box<dyn std::error::Error>> {
    // The process-wide default manager: this thread's client for this runtime.
    let client = rtlocal::client().await?;
    let resp = client.get(url).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1);
    let url = url.as_deref().unwrap_or("http://127.0.0.1:8080/");
    println!("{}", fetch(url).await?);

    // Run something when this runtime is torn down (when `main` returns).
    rtlocal::on_runtime_shutdown(|| eprintln!("runtime gone"))?;
    Ok(())
}
