//! Sample grids as 8-bit grayscale PNG files, encoded by the `png` crate.
use crate::durable::write_atomically;
use crate::error::{Error, Result};
use std::path::Path;

/// Encodes a `width` x `height` 8-bit grayscale image (row-major `pixels`) as PNG bytes.
///
/// # Errors
/// [`Error::InvalidParameter`] when the buffer does not match the size or a side is 0.
pub fn encode_gray_png(width: u32, height: u32, pixels: &[u8]) -> Result<Vec<u8>> {
    if width == 0 || height == 0 || pixels.len() != width as usize * height as usize {
        return Err(Error::invalid(
            "image",
            format!("{width}x{height}, {} bytes", pixels.len()),
            "needs width * height bytes and positive sides",
        ));
    }
    let png_error = |e: png::EncodingError| Error::io("encoding a PNG", std::io::Error::other(e));
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(png_error)?;
    writer.write_image_data(pixels).map_err(png_error)?;
    writer.finish().map_err(png_error)?;
    Ok(out)
}

/// Lays out `images` (each `side` x `side` u8) in a grid of `columns` columns with a 2-pixel
/// gray border, and writes it as a PNG atomically.
///
/// # Errors
/// [`Error::InvalidParameter`] for no images, 0 columns or images of the wrong size; I/O errors.
pub fn write_grid_png(path: &Path, images: &[&[u8]], side: usize, columns: usize) -> Result<()> {
    if images.is_empty() || columns == 0 {
        return Err(Error::invalid("grid", images.len(), "needs at least one image and one column"));
    }
    const BORDER: usize = 2;
    let rows = images.len().div_ceil(columns);
    let w = columns * (side + BORDER) + BORDER;
    let h = rows * (side + BORDER) + BORDER;
    let mut canvas = vec![128u8; w * h];
    for (k, img) in images.iter().enumerate() {
        if img.len() != side * side {
            return Err(Error::invalid("grid image", img.len(), format!("must have {side}x{side} pixels")));
        }
        let (r, c) = (k / columns, k % columns);
        let (y0, x0) = (BORDER + r * (side + BORDER), BORDER + c * (side + BORDER));
        for y in 0..side {
            canvas[(y0 + y) * w + x0..(y0 + y) * w + x0 + side].copy_from_slice(&img[y * side..(y + 1) * side]);
        }
    }
    let png = encode_gray_png(w as u32, h as u32, &canvas)?;
    write_atomically(path, &png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_decodes_to_the_same_pixels() {
        let pixels: Vec<u8> = (0..35u8).map(|i| i * 7).collect();
        let png = encode_gray_png(7, 5, &pixels).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height, info.color_type), (7, 5, png::ColorType::Grayscale));
        assert_eq!(&buf[..info.buffer_size()], &pixels[..]);
    }

    #[test]
    fn png_has_signature_and_valid_chunk_crcs() {
        let png = encode_gray_png(3, 2, &[0, 10, 20, 30, 40, 255]).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // Walk the chunks and check each CRC.
        let mut i = 8;
        let mut kinds = Vec::new();
        while i < png.len() {
            let len = u32::from_be_bytes(png[i..i + 4].try_into().unwrap()) as usize;
            let kind = &png[i + 4..i + 8];
            let mut crc = flate2::Crc::new();
            crc.update(&png[i + 4..i + 8 + len]);
            assert_eq!(crc.sum(), u32::from_be_bytes(png[i + 8 + len..i + 12 + len].try_into().unwrap()));
            kinds.push(String::from_utf8(kind.to_vec()).unwrap());
            i += 12 + len;
        }
        assert_eq!(kinds, ["IHDR", "IDAT", "IEND"]);
        assert!(encode_gray_png(3, 2, &[0; 5]).is_err());
    }
}
