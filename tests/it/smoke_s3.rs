//! aws-sdk-s3 talks to the real SeaweedFS S3 gateway of the test environment: plain HTTP and
//! HTTPS with a generated CA, and wrong credentials are refused.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use eso_testenv::{S3Options, S3Server};

fn client(endpoint: &str, access: &str, secret: &str, ca_pem: Option<Vec<u8>>) -> Client {
    let mut builder = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .force_path_style(true)
        .credentials_provider(Credentials::new(access, secret, None, None, "test"));
    if let Some(pem) = ca_pem {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .tls_context(
                TlsContext::builder()
                    .with_trust_store(TrustStore::empty().with_pem_certificate(pem))
                    .build()
                    .expect("TLS context"),
            )
            .build_https();
        builder = builder.http_client(http);
    }
    Client::from_conf(builder.build())
}

async fn put_get(client: &Client) {
    client
        .create_bucket()
        .bucket("smoke")
        .send()
        .await
        .expect("create bucket");
    client
        .put_object()
        .bucket("smoke")
        .key("folder/object")
        .body(ByteStream::from_static(b"snapshot bytes"))
        .send()
        .await
        .expect("put object");
    let got = client
        .get_object()
        .bucket("smoke")
        .key("folder/object")
        .send()
        .await
        .expect("get object");
    let body = got.body.collect().await.expect("read body").into_bytes();
    assert_eq!(&body[..], b"snapshot bytes");
}

#[tokio::test]
async fn s3_put_and_get_over_http() {
    let s3 = S3Server::start(S3Options::default()).expect("start SeaweedFS");
    let c = client(&s3.endpoint(), &s3.access_key, &s3.secret_key, None);
    put_get(&c).await;
}

#[tokio::test]
async fn s3_wrong_secret_key_is_rejected() {
    let s3 = S3Server::start(S3Options::default()).expect("start SeaweedFS");
    let good = client(&s3.endpoint(), &s3.access_key, &s3.secret_key, None);
    good.create_bucket()
        .bucket("creds")
        .send()
        .await
        .expect("create bucket");
    let bad = client(&s3.endpoint(), &s3.access_key, "not-the-secret", None);
    let err = bad
        .put_object()
        .bucket("creds")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("a wrong secret key must be refused");
    let code = err
        .as_service_error()
        .and_then(|e| aws_sdk_s3::error::ProvideErrorMetadata::code(e))
        .unwrap_or_default()
        .to_string();
    assert_eq!(code, "SignatureDoesNotMatch", "{err:?}");
}

#[tokio::test]
async fn s3_over_https_with_generated_ca() {
    let s3 = S3Server::start(S3Options {
        https: true,
        ..Default::default()
    })
    .expect("start SeaweedFS with HTTPS");
    let endpoint = s3.https_endpoint().expect("https endpoint");
    let ca = std::fs::read(s3.ca_file().expect("CA file")).expect("read CA");
    let c = client(&endpoint, &s3.access_key, &s3.secret_key, Some(ca));
    put_get(&c).await;
}
