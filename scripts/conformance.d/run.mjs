// Runs the suite against a cache and writes the raw results ({ test id: true | [kind, why] }).
//   node run.mjs SUITE_DIR BASE_URL OUT.json [ID,ID,...]
// With ids, only those tests run, plus the tests they depend on (so they can be scored).
import fs from 'fs'
import { openSuite } from './suite.mjs'

const [dir, base, out, ids] = process.argv.slice(2)
if (!dir || !base || !out) {
  console.error('usage: run.mjs SUITE_DIR BASE_URL OUT.json [ID,ID,...]')
  process.exit(2)
}
const suite = await openSuite(dir)
let selected = suite.groups
if (ids) {
  const byId = new Map()
  for (const g of suite.groups) for (const t of g.tests) byId.set(t.id, t)
  const want = new Set()
  const add = id => {
    const t = byId.get(id)
    if (!t) throw new Error(`unknown test id ${id}`)
    if (want.has(id)) return
    want.add(id)
    for (const d of t.depends_on || []) add(d)
  }
  ids.split(',').filter(Boolean).forEach(add)
  selected = suite.groups
    .map(g => ({ ...g, tests: g.tests.filter(t => want.has(t.id)) }))
    .filter(g => g.tests.length)
}
const results = await suite.run(selected, base)
fs.writeFileSync(out, JSON.stringify(results, null, 2) + '\n')
