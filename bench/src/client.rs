//! The benchmark's own HTTP/2 client to a webhook, trusting only that webhook's CA, so a request
//! that is answered went through the real TLS stack.

use anyhow::Result;

pub fn https_client(ca_pem: &str) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes())?])
        // The API server speaks HTTP/2 to webhooks (ALPN h2) and keeps the connection open.
        .http2_prior_knowledge()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()?)
}

/// POSTs a review body; returns the HTTP status and the answer's text.
pub async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Result<(u16, String)> {
    let response = client.post(url).header("content-type", "application/json").body(body).send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}
