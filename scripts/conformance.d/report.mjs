// Scores raw suite results the way cache-tests.fyi does, prints them per test group next to the
// published figures, and checks (or rewrites) the committed baseline of passing required tests.
//
//   node report.mjs --suite DIR --target LABEL=RESULTS.json [--target ...]
//                   [--retry LABEL=RESULTS.json ...] [--published FILE]
//                   [--baseline FILE --baseline-target LABEL (--check | --update | --candidates)]
//                   [--failures LABEL ...] [--json OUT] [--markdown]
//
// Outcomes follow the suite's own rules (its determineTestResult): a test whose dependency did
// not pass is not judged; a failed "required" test is a failure, a failed "optimal" test a
// missed reuse ("optional" on cache-tests.fyi), a "check" only records a behaviour (yes/no).
// "passed" counts passed required and optimal tests, as the published figures do.
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'
import { openSuite } from './suite.mjs'

const args = { target: [], retry: [], failures: [] }
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i++) {
  const a = argv[i]
  const flag = a.replace(/^--/, '')
  if (['check', 'update', 'candidates'].includes(flag)) {
    args.mode = flag
  } else if (flag === 'markdown') {
    args.markdown = true
  } else if (['target', 'retry', 'failures'].includes(flag)) {
    args[flag].push(argv[++i])
  } else if (['suite', 'published', 'baseline', 'baseline-target', 'json'].includes(flag)) {
    args[flag] = argv[++i]
  } else {
    console.error(`report.mjs: unknown argument ${a}`)
    process.exit(2)
  }
}
const labelled = s => {
  const at = s.indexOf('=')
  return [s.slice(0, at), s.slice(at + 1)]
}

const suite = await openSuite(args.suite)
const tests = new Map()
for (const g of suite.groups) for (const t of g.tests) tests.set(t.id, { ...t, group: g })
const proxyTests = [...tests.values()].filter(t => t.browser_only !== true)

/** Outcome of every test for one results object. */
function score (results) {
  const out = new Map()
  const outcome = id => {
    if (out.has(id)) return out.get(id)
    const t = tests.get(id)
    const r = results[id]
    let o
    if (r === undefined) {
      o = 'untested'
    } else if ((t.depends_on || []).some(d => !['pass', 'yes'].includes(outcome(d)))) {
      o = 'dependency'
    } else if (Array.isArray(r) && r[0] === 'Setup') {
      o = r[1] === 'retry' ? 'retry' : 'setup'
    } else if (r === false || (Array.isArray(r) && r[0] === 'AbortError')) {
      o = 'harness'
    } else {
      const kind = t.kind || 'required'
      if (kind === 'check') o = r === true ? 'yes' : 'no'
      else if (r === true) o = 'pass'
      else o = kind === 'optimal' ? 'missed' : 'fail'
    }
    out.set(id, o)
    return o
  }
  for (const t of proxyTests) outcome(t.id)
  return out
}

const NOT_JUDGED = ['dependency', 'setup', 'retry', 'harness', 'untested']
function tally (outcomes, ids) {
  const c = { pass: 0, fail: 0, missed: 0, notJudged: 0, yes: 0, no: 0 }
  for (const id of ids) {
    const o = outcomes.get(id)
    if (NOT_JUDGED.includes(o)) c.notJudged++
    else c[o]++
  }
  return c
}

const readJson = f => JSON.parse(fs.readFileSync(f, 'utf8'))
const targets = args.target.map(s => {
  const [label, file] = labelled(s)
  let results = readJson(file)
  let retried = new Set()
  // A test re-run on its own after failing counts as passed if any run passed: the suite's
  // timing (3 s pauses, 1 s lifetimes) can lose a race on a busy machine.
  for (const retry of args.retry.filter(r => labelled(r)[0] === label)) {
    const merged = { ...results }
    for (const [id, r] of Object.entries(readJson(labelled(retry)[1]))) {
      if (results[id] === true) continue
      if (r === true) retried.add(id)
      merged[id] = r
    }
    results = merged
  }
  const outcomes = score(results)
  retried = new Set([...retried].filter(id => outcomes.get(id) === 'pass'))
  return { label, results, outcomes, retried }
})

// ---------------------------------------------------------------- tables
const pad = (s, n) => String(s).padEnd(n)
const lpad = (s, n) => String(s).padStart(n)
const cell = c => [c.pass, c.fail, c.missed, c.notJudged].map(n => lpad(n, 4)).join(' ')
const header = `${suite.version} (${suite.layout === 'release' ? 'npm release' : 'checkout'}, ` +
  `${proxyTests.length} tests for a reverse proxy; ${tests.size - proxyTests.length} browser-only skipped)`

function printGroups () {
  const all = proxyTests.map(t => t.id)
  const rows = suite.groups
    .map(g => [g.id, g.tests.filter(t => t.browser_only !== true).map(t => t.id)])
    .filter(([, ids]) => ids.length)
  rows.push(['total', all])
  console.log(`http-cache-tests ${header}`)
  if (args.markdown) {
    // One cell per target: passed / failed (required) / missed reuse / not judged.
    console.log(`\n| group | ${targets.map(t => t.label).join(' | ')} |`)
    console.log(`|---|${targets.map(() => '---:|').join('')}`)
    for (const [id, ids] of rows) {
      const b = id === 'total' ? '**' : ''
      console.log(`| ${b}${id}${b} | ${targets.map(t => {
        const c = tally(t.outcomes, ids)
        return `${b}${c.pass} / ${c.fail} / ${c.missed} / ${c.notJudged}${b}`
      }).join(' | ')} |`)
    }
  } else {
    const w = Math.max(...rows.map(([id]) => id.length), 5) + 2
    const colw = Math.max(19, ...targets.map(t => t.label.length))
    console.log('columns: passed, failed (required), missed reuse (optimal failed), not judged ' +
      '(a dependency failed, setup or harness error)')
    console.log(pad('', w) + targets.map(t => '| ' + pad(t.label, colw)).join(' '))
    console.log(pad('group', w) + targets.map(() => '| ' + pad('pass fail miss   nj', colw)).join(' '))
    for (const [id, ids] of rows) {
      console.log(pad(id, w) + targets.map(t => '| ' + pad(cell(tally(t.outcomes, ids)), colw)).join(' '))
    }
  }
  for (const t of targets) {
    const c = tally(t.outcomes, all)
    console.log(`${t.label}: ${c.pass} passed, ${c.fail} required failed, ${c.missed} missed reuse, ` +
      `${c.notJudged} not judged; checks ${c.yes} yes / ${c.no} no` +
      (t.retried.size ? `; passed only when re-run: ${[...t.retried].sort().join(' ')}` : ''))
  }
}

/** Published results: the suite's own results/ directory scored against this suite. */
async function publishedFromSuite () {
  const index = path.join(suite.resultsDir, 'index.mjs')
  if (!fs.existsSync(index)) return []
  const entries = (await import(pathToFileURL(index).href)).default
  return entries.filter(e => e.type === 'rev-proxy').map(e => {
    const c = tally(score(readJson(path.join(suite.resultsDir, e.file))), proxyTests.map(t => t.id))
    return { name: e.name, version: e.version, ...c }
  })
}

function printPublished (title, rows) {
  if (!rows.length) return
  console.log(`\n${title}`)
  if (args.markdown) {
    console.log('\n| cache | passed | required failed | missed reuse |\n|---|---:|---:|---:|')
    for (const r of rows) console.log(`| ${r.name} ${r.version} | ${r.pass} | ${r.fail} | ${r.missed} |`)
    return
  }
  console.log(`${pad('cache', 26)} ${lpad('passed', 6)} ${lpad('failed', 6)} ${lpad('missed', 6)}`)
  for (const r of rows) {
    console.log(`${pad(`${r.name} ${r.version}`, 26)} ${lpad(r.pass, 6)} ${lpad(r.fail, 6)} ` +
      `${lpad(r.missed, 6)}`)
  }
}

function printFailures (label) {
  const t = targets.find(x => x.label === label)
  if (!t) return
  const list = kind => proxyTests.filter(x => t.outcomes.get(x.id) === kind)
  for (const [kind, title] of [['fail', 'required tests failed'], ['missed', 'missed reuse']]) {
    const l = list(kind)
    if (!l.length) continue
    console.log(`\n${label}: ${title} (${l.length})`)
    for (const x of l) {
      const r = t.results[x.id]
      console.log(`  ${pad(x.group.id, 20)} ${pad(x.id, 46)} ${Array.isArray(r) ? r[1] : ''}`)
    }
  }
}

// ---------------------------------------------------------------- baseline
const passingRequired = t => proxyTests
  .filter(x => (x.kind || 'required') === 'required' && t.outcomes.get(x.id) === 'pass')
  .map(x => x.id).sort()

/** Baseline tests that did not pass: what the caller re-runs before calling it a regression. */
function candidates (t, base) {
  return base.required_passing.filter(id => tests.has(id) && t.outcomes.get(id) !== 'pass')
}

function updateBaseline (t) {
  const c = tally(t.outcomes, proxyTests.map(x => x.id))
  const base = {
    suite: suite.id,
    target: t.label,
    summary: { passed: c.pass, required_failed: c.fail, missed_reuse: c.missed, not_judged: c.notJudged },
    required_passing: passingRequired(t)
  }
  fs.writeFileSync(args.baseline, JSON.stringify(base, null, 2) + '\n')
  console.log(`\nbaseline rewritten: ${args.baseline} (${base.required_passing.length} required tests pass)`)
}

/** Prints the comparison; true if a baseline test fails now. */
function regressed (t, base) {
  const now = new Set(passingRequired(t))
  const lost = base.required_passing.filter(id => !now.has(id))
  const gained = [...now].filter(id => !base.required_passing.includes(id))
  console.log(`\nbaseline (${args.baseline}): ${base.required_passing.length} required tests passed; ` +
    `now ${now.size}`)
  if (gained.length) {
    console.log(`newly passing (run with --update-baseline to keep them): ${gained.join(' ')}`)
  }
  if (!lost.length) {
    console.log('no regression')
    return false
  }
  console.log('REGRESSION: required tests that passed in the baseline and fail now:')
  for (const id of lost) {
    const r = t.results[id]
    console.log(`  ${pad(id, 46)} ${t.outcomes.get(id)}: ${Array.isArray(r) ? r[1] : ''}`)
  }
  return true
}

const baselineTarget = args.baseline && args.mode
  ? targets.find(x => x.label === args['baseline-target'])
  : undefined
if (args.baseline && args.mode && !baselineTarget) {
  console.error(`report.mjs: no target ${args['baseline-target']} to compare with the baseline`)
  process.exit(2)
}
const base = args.mode === 'check' || args.mode === 'candidates' ? readJson(args.baseline) : undefined
if (base && base.suite !== suite.id) {
  console.error(`report.mjs: baseline ${args.baseline} is for ${base.suite}, not ${suite.id}: ` +
    'run with --update-baseline (or --baseline FILE) for this suite')
  process.exit(2)
}

if (args.mode === 'candidates') {
  const again = candidates(baselineTarget, base)
  if (again.length) console.log(again.join('\n'))
} else {
  printGroups()
  if (suite.layout === 'release') {
    printPublished('Published results shipped with this release (results/, scored against its tests):',
      await publishedFromSuite())
    if (args.published && fs.existsSync(args.published)) {
      const p = readJson(args.published)
      printPublished(`Published on cache-tests.fyi (${p.source}; a later suite with ${p.tests} ` +
        'tests, so not the same test set):', p.caches)
    }
  } else {
    printPublished('Published results in this checkout (results/):', await publishedFromSuite())
  }
  args.failures.forEach(printFailures)
  if (args.mode === 'update') updateBaseline(baselineTarget)
  if (args.mode === 'check' && regressed(baselineTarget, base)) process.exitCode = 1
  if (args.json) {
    const out = {}
    for (const t of targets) out[t.label] = Object.fromEntries(t.outcomes)
    fs.writeFileSync(args.json, JSON.stringify(out, null, 2) + '\n')
  }
}
