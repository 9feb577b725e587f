import { render } from 'preact'
import 'uplot/dist/uPlot.min.css'
import './style.css'
import { App } from './app.tsx'
import { live } from './live.ts'
import { auth } from './auth.ts'

live.start()
void auth.restore()
render(<App />, document.getElementById('app') as HTMLElement)
