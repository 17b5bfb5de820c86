//! A filter module as an OCI image that Istio's wasm puller accepts: the
//! "compat" variant of the Wasm image specification. One
//! `application/vnd.oci.image.layer.v1.tar+gzip` layer holds a tar with
//! one file, `plugin.wasm`; the manifest carries the annotation
//! `module.wasm.image/variant: compat`; the config is a plain OCI image
//! config. Istio tries this shape first, every registry stores it, and
//! `docker`, `skopeo` and `crane` copy it like any image.
//!
//! The image is a function of the module's bytes alone: the tar and the
//! gzip stream carry no time, owner or host, so the same module gives the
//! same digest on every machine and a CI job can compute the digest Istio's
//! `sha256` field must hold before it pushes.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// The manifest's media type (OCI image manifest v1).
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The config blob's media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The layer's media type: a gzip-compressed tar.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The file in the layer that Istio loads.
pub const MODULE_FILE: &str = "plugin.wasm";
/// The annotation that marks the compat variant with an OCI layer type.
pub const VARIANT_ANNOTATION: &str = "module.wasm.image/variant";

/// One content-addressed blob of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: &'static str,
    /// `sha256:<64 hex>`.
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Self {
        Blob {
            media_type,
            digest: digest_of(&bytes),
            bytes,
        }
    }

    fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.bytes.len(),
        })
    }
}

/// The three blobs of the image; the manifest's digest names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub config: Blob,
    pub layer: Blob,
    pub manifest: Blob,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("not a WebAssembly module (it does not start with `\\0asm`)")]
    NotWasm,
    #[error("the module is {0} bytes, more than a tar entry can say (8 GiB)")]
    TooLarge(usize),
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        aegis_engine::trust::hex(&Sha256::digest(bytes))
    )
}

impl Image {
    /// The image of `module`. `annotations` go on the manifest beside the
    /// variant's (sorted, so the bytes do not depend on their order).
    pub fn new(module: &[u8], annotations: &[(&str, String)]) -> Result<Self, ImageError> {
        if !module.starts_with(b"\0asm") {
            return Err(ImageError::NotWasm);
        }
        let tar = tar_one_file(MODULE_FILE, module)?;
        let diff_id = digest_of(&tar);
        let layer = Blob::new(LAYER_MEDIA_TYPE, gzip(&tar));
        let config = serde_json::json!({
            "architecture": "wasm",
            "os": "wasip1",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        let config = Blob::new(CONFIG_MEDIA_TYPE, json_bytes(&config));
        let mut notes = serde_json::Map::new();
        for (key, value) in annotations {
            notes.insert((*key).to_string(), serde_json::Value::from(value.as_str()));
        }
        notes.insert(VARIANT_ANNOTATION.to_string(), "compat".into());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
            "annotations": notes,
        });
        let manifest = Blob::new(MANIFEST_MEDIA_TYPE, json_bytes(&manifest));
        Ok(Image {
            config,
            layer,
            manifest,
        })
    }

    /// The manifest digest without its `sha256:`: what a `WasmPlugin`'s
    /// `sha256` field holds (Istio compares it with the digest of the
    /// manifest it pulled, not of the module).
    pub fn sha256_hex(&self) -> &str {
        self.manifest
            .digest
            .strip_prefix("sha256:")
            .unwrap_or(&self.manifest.digest)
    }

    /// Writes the image as an OCI image layout in `dir` (created if
    /// missing): `oci-layout`, `index.json` naming the manifest (with
    /// `tag` as its `org.opencontainers.image.ref.name`) and
    /// `blobs/sha256/*`. Each file is written beside its place and renamed
    /// there, so a reader never sees half a blob.
    pub fn write_layout(&self, dir: &Path, tag: &str) -> Result<(), ImageError> {
        let blobs = dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).map_err(|e| write_error(&blobs, e))?;
        for blob in [&self.config, &self.layer, &self.manifest] {
            let name = blob.digest.trim_start_matches("sha256:");
            write_atomic(&blobs.join(name), &blob.bytes)?;
        }
        let mut descriptor = self.manifest.descriptor();
        if let Some(obj) = descriptor.as_object_mut() {
            obj.insert(
                "annotations".into(),
                serde_json::json!({"org.opencontainers.image.ref.name": tag}),
            );
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [descriptor],
        });
        write_atomic(
            &dir.join("oci-layout"),
            &json_bytes(&serde_json::json!({"imageLayoutVersion": "1.0.0"})),
        )?;
        write_atomic(&dir.join("index.json"), &json_bytes(&index))
    }
}

fn json_bytes(value: &serde_json::Value) -> Vec<u8> {
    // `serde_json::Map` keeps keys sorted (no `preserve_order`), so the
    // bytes depend on the content alone.
    value.to_string().into_bytes()
}

fn write_error(path: &Path, source: std::io::Error) -> ImageError {
    ImageError::Write {
        path: path.display().to_string(),
        source,
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp).map_err(|e| write_error(&tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| write_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| write_error(path, e))
}

/// A POSIX ustar archive of one regular file: mode 0644, owner 0:0, time
/// 0, then the two zero blocks that end an archive.
fn tar_one_file(name: &str, data: &[u8]) -> Result<Vec<u8>, ImageError> {
    // Eleven octal digits: sizes below 8 GiB.
    if data.len() as u64 >= 8 << 30 {
        return Err(ImageError::TooLarge(data.len()));
    }
    fn put(header: &mut [u8; 512], at: usize, field: &[u8]) {
        if let Some(slot) = header.get_mut(at..at + field.len()) {
            slot.copy_from_slice(field);
        }
    }
    let mut header = [0u8; 512];
    put(&mut header, 0, name.as_bytes());
    put(&mut header, 100, b"0000644\0");
    put(&mut header, 108, b"0000000\0");
    put(&mut header, 116, b"0000000\0");
    put(
        &mut header,
        124,
        format!("{:011o}\0", data.len()).as_bytes(),
    );
    put(&mut header, 136, b"00000000000\0");
    put(&mut header, 156, b"0");
    put(&mut header, 257, b"ustar\0");
    put(&mut header, 263, b"00");
    // The checksum is summed with its own field as eight spaces.
    put(&mut header, 148, b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    put(&mut header, 148, format!("{sum:06o}\0 ").as_bytes());
    let padding = (512 - data.len() % 512) % 512;
    let mut out = Vec::with_capacity(512 + data.len() + padding + 1024);
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out.resize(out.len() + padding + 1024, 0);
    Ok(out)
}

/// A gzip member with no name and time 0 (RFC 1952): the same input gives
/// the same bytes.
fn gzip(data: &[u8]) -> Vec<u8> {
    let deflated = miniz_oxide::deflate::compress_to_vec(data, 9);
    let mut out = Vec::with_capacity(deflated.len() + 18);
    // Magic, deflate, no flags, mtime 0, best compression, unknown OS.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
    out.extend_from_slice(&deflated);
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    // ISIZE is the input length modulo 2^32 (RFC 1952, 2.3.1).
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const MODULE: &[u8] = b"\0asm\x01\0\0\0 a module that is not one";

    #[test]
    fn same_module_same_digest_and_other_module_other_digest() {
        let a = Image::new(MODULE, &[]).unwrap();
        let b = Image::new(MODULE, &[]).unwrap();
        assert_eq!(a, b);
        let mut other = MODULE.to_vec();
        other.push(b'!');
        let c = Image::new(&other, &[]).unwrap();
        assert_ne!(a.manifest.digest, c.manifest.digest);
        assert_eq!(a.sha256_hex().len(), 64);
    }

    #[test]
    fn the_layer_inflates_to_a_tar_holding_the_module() {
        let image = Image::new(MODULE, &[]).unwrap();
        let gz = &image.layer.bytes;
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        let tar = miniz_oxide::inflate::decompress_to_vec(&gz[10..gz.len() - 8]).unwrap();
        assert_eq!(&tar[..MODULE_FILE.len()], MODULE_FILE.as_bytes());
        assert_eq!(&tar[257..262], b"ustar");
        assert_eq!(&tar[512..512 + MODULE.len()], MODULE);
        assert_eq!(tar.len() % 512, 0);
        let crc = u32::from_le_bytes(gz[gz.len() - 8..gz.len() - 4].try_into().unwrap());
        assert_eq!(crc, crc32fast::hash(&tar));
        let config: serde_json::Value = serde_json::from_slice(&image.config.bytes).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], digest_of(&tar).as_str());
    }

    #[test]
    fn the_manifest_names_its_blobs_and_the_variant() {
        let image = Image::new(MODULE, &[("dev.aegis.revision", "7".into())]).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&image.manifest.bytes).unwrap();
        assert_eq!(m["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(m["config"]["digest"], image.config.digest.as_str());
        assert_eq!(m["layers"][0]["digest"], image.layer.digest.as_str());
        assert_eq!(m["layers"][0]["mediaType"], LAYER_MEDIA_TYPE);
        assert_eq!(m["annotations"][VARIANT_ANNOTATION], "compat");
        assert_eq!(m["annotations"]["dev.aegis.revision"], "7");
    }

    #[test]
    fn a_file_that_is_not_wasm_is_refused() {
        assert!(matches!(
            Image::new(b"#!/bin/sh", &[]),
            Err(ImageError::NotWasm)
        ));
    }
}
