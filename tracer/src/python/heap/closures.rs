//! Closure cells: a function's `func_closure` tuple of cells, named by its code object's free
//! variables (3.10: `co_freevars`; 3.11+: the last `co_nfreevars` names of `co_localsplusnames`;
//! containers §2.2). Each cell's content is reached as `FUNC<closure>.NAME`.

use bytes::Bytes;

use super::paths::{is_identifier, Seg};
use super::{plausible_ptr, Node, Obj, Parent, Scan};
use crate::remote::{le_u32, le_u64};

/// Cells read per closure; a function with more free variables is not followed.
const MAX_CELLS: u64 = 32;

/// A function's closure on its way from the closure tuple to named children.
struct Closure<'o> {
    func: &'o Obj,
    /// Stage 1: the cell addresses; stage 2: what each cell holds (0: unreadable).
    cells: Vec<u64>,
    /// Stage 1: the names tuple; stage 2: the address of the first free-variable name in it.
    names: u64,
    /// 3.11+: `co_nfreevars`.
    nfree: Option<u64>,
}

impl Scan<'_> {
    /// The contents of the closure cells of `funcs`, named after their free variables.
    pub(crate) fn closure_children(&mut self, funcs: &[Obj]) -> Vec<Node> {
        let l = self.layout;
        let funcs: Vec<&Obj> =
            funcs.iter().filter(|f| plausible_ptr(f.w(l.func_closure)) && plausible_ptr(f.w(l.func_code))).collect();
        if funcs.is_empty() {
            return vec![];
        }
        let closures = self.closure_tuples(funcs);
        let closures = self.closure_cells(closures);
        self.closure_names(closures)
    }

    /// Stage 1: the closure tuples and code objects.
    fn closure_tuples<'o>(&mut self, funcs: Vec<&'o Obj>) -> Vec<Closure<'o>> {
        let l = self.layout;
        let mut regions = Vec::new();
        for f in &funcs {
            regions.push((f.w(l.func_closure), (l.tuple_items + 8 * MAX_CELLS) as usize));
            regions.push((f.w(l.func_code), 104usize));
        }
        let got = self.batch(&regions);
        let mut it = got.into_iter();
        let mut out = Vec::new();
        for func in funcs {
            let (Some(tb), Some(cb)) = (it.next().flatten(), it.next().flatten()) else {
                self.stats.dropped += 1;
                continue;
            };
            if le_u64(&tb, 8) != self.types.tuple
                || !l.refcnt_plausible(le_u64(&tb, 0))
                || !l.refcnt_plausible(le_u64(&cb, 0))
            {
                self.stats.dropped += 1;
                continue;
            }
            let n = le_u64(&tb, 16);
            if n == 0 || n > MAX_CELLS {
                continue;
            }
            let cells = (0..n).map(|k| le_u64(&tb, (l.tuple_items + 8 * k) as usize)).collect();
            let (names, nfree) = if l.code_freevars != 0 {
                (le_u64(&cb, l.code_freevars as usize), None)
            } else {
                (le_u64(&cb, l.code_localsplusnames as usize), Some(le_u32(&cb, l.code_nfreevars as usize) as u64))
            };
            out.push(Closure { func, cells, names, nfree });
        }
        out
    }

    /// Stage 2: the cells and the names tuple's header (its length says where the free
    /// variables' names start).
    fn closure_cells<'o>(&mut self, closures: Vec<Closure<'o>>) -> Vec<Closure<'o>> {
        let l = self.layout;
        let mut regions = Vec::new();
        for c in &closures {
            regions.push((c.names, l.tuple_items as usize));
            regions.extend(c.cells.iter().map(|&cell| (cell, 24usize)));
        }
        let got = self.batch(&regions);
        let mut it = got.into_iter();
        let mut out = Vec::new();
        for mut c in closures {
            let ntb = it.next().flatten();
            let cbs: Vec<Option<Bytes>> = c.cells.iter().map(|_| it.next().flatten()).collect();
            let Some(ntb) = ntb else { continue };
            if le_u64(&ntb, 8) != self.types.tuple {
                continue;
            }
            let ntotal = le_u64(&ntb, 16);
            let n = c.cells.len() as u64;
            let first = match c.nfree {
                None if ntotal == n => 0,
                Some(nf) if nf == n && ntotal >= nf && ntotal < 1 << 16 => ntotal - nf,
                _ => continue,
            };
            c.cells = cbs
                .iter()
                .map(|b| match b {
                    Some(b) if le_u64(b, 8) == self.types.cell && l.refcnt_plausible(le_u64(b, 0)) => {
                        le_u64(b, l.cell_ref as usize)
                    }
                    _ => 0,
                })
                .collect();
            c.names += l.tuple_items + 8 * first;
            out.push(c);
        }
        out
    }

    /// Stage 3: the name pointers, then the names; one child per set cell with a valid name.
    fn closure_names(&mut self, closures: Vec<Closure>) -> Vec<Node> {
        let regions: Vec<(u64, usize)> = closures.iter().map(|c| (c.names, 8 * c.cells.len())).collect();
        let got = self.batch(&regions);
        let mut ptrs = Vec::new();
        let mut named = Vec::new();
        for (c, b) in closures.into_iter().zip(got) {
            let Some(b) = b else { continue };
            ptrs.extend((0..c.cells.len()).map(|k| le_u64(&b, 8 * k)));
            named.push(c);
        }
        let mut names = self.read_strs(&ptrs).into_iter();
        let mut out = Vec::new();
        for c in named {
            for &v in &c.cells {
                let name = names.next().flatten();
                let Some(name) = name.filter(|n| is_identifier(n)) else { continue };
                if v != 0 && v != self.types.none {
                    out.push(Node {
                        addr: v,
                        path: self.paths.child(c.func.node.path, Seg::Closure(name)),
                        depth: c.func.node.depth + 1,
                        rank: c.func.node.rank,
                        parent: Parent::Other,
                    });
                }
            }
        }
        out
    }
}
