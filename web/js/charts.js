// uPlot charts that follow the theme and their container's width.

import uPlot from '../vendor/uPlot.esm.js'

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim()
}

export function palette() {
  return {
    text: cssVar('--muted'),
    grid: cssVar('--grid'),
    series: [cssVar('--chart-1'), cssVar('--chart-2'), cssVar('--chart-3'), cssVar('--chart-4')],
  }
}

// One bar per bucket, or two side by side (left and right of the bucket's start).
const bars = {
  single: uPlot.paths.bars({ size: [0.7, 40], gap: 1 }),
  left: uPlot.paths.bars({ size: [0.4, 20], gap: 1, align: -1 }),
  right: uPlot.paths.bars({ size: [0.4, 20], gap: 1, align: 1 }),
}

/**
 * A time chart in `container`. `series`: [{label, kind: 'bars'|'line', value: fn}],
 * where `value` formats a y value for the legend; `step` is the bucket size in seconds
 * (the x axis leaves half a bucket on either side). Returns {setData, destroy}.
 */
export function timeChart(container, { series, yLabel, step = 60 }, data) {
  const barSeries = series.filter((s) => s.kind === 'bars').length
  const barPaths = (i) => {
    if (barSeries < 2) return bars.single
    return series.slice(0, i).filter((s) => s.kind === 'bars').length === 0 ? bars.left : bars.right
  }
  let chart = null
  let latest = data

  function build() {
    chart?.destroy()
    const colors = palette()
    const width = Math.max(container.clientWidth, 200)
    const axis = {
      stroke: colors.text,
      grid: { stroke: colors.grid, width: 1 },
      ticks: { stroke: colors.grid, width: 1 },
      font: '11px system-ui, sans-serif',
    }
    chart = new uPlot(
      {
        width,
        height: 190,
        cursor: { drag: { x: false, y: false }, points: { size: 6 } },
        legend: { live: true },
        scales: {
          x: { time: true, range: (_u, min, max) => [min - step / 2, max + step / 2] },
          y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] },
        },
        axes: [
          { ...axis },
          { ...axis, label: yLabel, labelFont: '11px system-ui, sans-serif', size: 52 },
        ],
        series: [
          {},
          ...series.map((s, i) => ({
            label: s.label,
            stroke: colors.series[i % colors.series.length],
            fill: s.kind === 'bars' ? `${colors.series[i % colors.series.length]}99` : undefined,
            width: s.kind === 'bars' ? 0 : 2,
            paths: s.kind === 'bars' ? barPaths(i) : undefined,
            // A lone bucket between empty ones has no line to draw: show the points.
            points: s.kind === 'bars' ? { show: false } : { show: true, size: 5 },
            value: (_u, v) => (v == null ? '–' : s.value ? s.value(v) : String(v)),
          })),
        ],
      },
      latest,
      container,
    )
  }

  build()
  const resize = new ResizeObserver(() => {
    if (chart && Math.abs(chart.width - container.clientWidth) > 2) {
      chart.setSize({ width: Math.max(container.clientWidth, 200), height: 190 })
    }
  })
  resize.observe(container)
  const onTheme = () => build()
  window.addEventListener('ollabridge:theme', onTheme)

  return {
    setData(next) {
      latest = next
      chart.setData(next)
    },
    destroy() {
      resize.disconnect()
      window.removeEventListener('ollabridge:theme', onTheme)
      chart?.destroy()
      chart = null
    },
  }
}
