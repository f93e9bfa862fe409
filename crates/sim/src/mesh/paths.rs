//! Following forwarding paths: the chain of next hops from a source towards a destination,
//! memoised per destination ([`Mesh::follow`]) or walked whole ([`Mesh::walk`]).

use super::Mesh;

/// What [`Mesh::follow`] found at the end of a chain of next hops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathEnd {
    Reached,
    /// Through an agent that is dead (or about to be killed).
    Dead,
    NoRoute,
    Loop,
}

pub(super) const MEMO_UNKNOWN: u8 = 0;
const MEMO_VISITING: u8 = 1;

fn memo_code(end: PathEnd) -> u8 {
    match end {
        PathEnd::Reached => 2,
        PathEnd::Dead => 3,
        PathEnd::NoRoute => 4,
        PathEnd::Loop => 5,
    }
}

fn memo_end(code: u8) -> Option<PathEnd> {
    match code {
        2 => Some(PathEnd::Reached),
        3 => Some(PathEnd::Dead),
        4 => Some(PathEnd::NoRoute),
        5 => Some(PathEnd::Loop),
        _ => None,
    }
}

impl Mesh {
    /// Where the chain of next hops from `source` towards `destination` ends. An agent marked
    /// in `dead` ends it as `Dead`. Results are memoised per destination in `self.memo`, which
    /// the caller clears with [`Mesh::clear_memo`] before moving to another destination.
    pub fn follow(&mut self, source: usize, destination: usize, dead: &[bool]) -> PathEnd {
        let target = self.agents[destination].id;
        let mut stack: Vec<usize> = Vec::new();
        let mut at = source;
        let end = loop {
            if at == destination {
                break PathEnd::Reached;
            }
            if dead[at] {
                break PathEnd::Dead;
            }
            match self.memo[at] {
                MEMO_UNKNOWN => {}
                MEMO_VISITING => break PathEnd::Loop,
                code => break memo_end(code).unwrap_or(PathEnd::Loop),
            }
            self.memo[at] = MEMO_VISITING;
            self.touched.push(at as u32);
            stack.push(at);
            match self.agents[at].router.next_hop(&target) {
                None => break PathEnd::NoRoute,
                Some(next) => match self.index.get(&next) {
                    Some(&next) => at = next as usize,
                    None => break PathEnd::NoRoute,
                },
            }
        };
        for node in stack {
            self.memo[node] = memo_code(end);
        }
        end
    }

    pub fn clear_memo(&mut self) {
        for node in self.touched.drain(..) {
            self.memo[node as usize] = MEMO_UNKNOWN;
        }
    }

    /// The whole path from `source` towards `destination` (no memo), and where it ends.
    pub(super) fn walk(
        &mut self,
        source: usize,
        destination: usize,
        dead: &[bool],
        path: &mut Vec<u32>,
    ) -> PathEnd {
        let target = self.agents[destination].id;
        path.clear();
        let mut at = source;
        loop {
            if path.len() > self.agents.len() || path.contains(&(at as u32)) {
                return PathEnd::Loop;
            }
            path.push(at as u32);
            if at == destination {
                return PathEnd::Reached;
            }
            if dead[at] {
                return PathEnd::Dead;
            }
            match self.agents[at]
                .router
                .next_hop(&target)
                .and_then(|next| self.index.get(&next))
            {
                Some(&next) => at = next as usize,
                None => return PathEnd::NoRoute,
            }
        }
    }
}
