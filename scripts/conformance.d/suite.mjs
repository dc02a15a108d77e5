// Loads an installed http-cache-tests suite: its test groups and its runner, for either layout
// (the npm release, with client/ at the top, or a current checkout, with test-engine/).
import crypto from 'crypto'
import fs from 'fs'
import path from 'path'
import { createRequire } from 'module'
import { pathToFileURL } from 'url'

const load = file => import(pathToFileURL(file).href)

export async function openSuite (dir) {
  const current = fs.existsSync(path.join(dir, 'test-engine', 'client', 'runner.mjs'))
  const groups = (await load(path.join(dir, 'tests', 'index.mjs'))).default.slice()
  // The release's own command line adds the Surrogate-Control group to the index; do the same
  // so the counts match what its `npm run cli` reports.
  const surrogate = path.join(dir, 'tests', 'surrogate-control.mjs')
  if (!current && fs.existsSync(surrogate)) {
    const s = (await load(surrogate)).default
    if (!groups.some(g => g.id === s.id)) groups.push(s)
  }
  const version = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version
  const serverFile = current
    ? path.join(dir, 'test-engine', 'server', 'server.mjs')
    : path.join(dir, 'server', 'server.mjs')
  // Releases and checkouts can share a version number: the test definitions tell them apart.
  const digest = crypto.createHash('sha256')
  for (const f of fs.readdirSync(path.join(dir, 'tests')).filter(f => f.endsWith('.mjs')).sort()) {
    digest.update(f).update(fs.readFileSync(path.join(dir, 'tests', f)))
  }
  const layout = current ? 'checkout' : 'release'
  return {
    dir,
    version,
    layout,
    id: `http-cache-tests ${version} ${layout}, tests ${digest.digest('hex').slice(0, 12)}`,
    groups,
    serverFile,
    resultsDir: path.join(dir, 'results'),
    // Runs the given groups against base and resolves to { test id: result }.
    async run (selected, base) {
      if (current) {
        const runner = await load(path.join(dir, 'test-engine', 'client', 'runner.mjs'))
        await runner.runTests(selected, false, base)
        return runner.getResults()
      }
      const runner = await load(path.join(dir, 'client', 'runner.mjs'))
      const fetch = createRequire(path.join(dir, 'package.json'))('node-fetch')
      await runner.runTests(selected, fetch, false, base)
      return runner.getResults()
    }
  }
}
